"""The console's sign-in form: the same checks as POST /api/v1/auth/signin, answered as a page.

A wrong name or password, or a slowed-down retry, re-renders the form with the one-line
reason (401, 429 with Retry-After) instead of a JSON body; success sets the same session
cookie (a fresh id, the one the browser came with ended) and goes to `next`. The failure
counting is the plane's own throttle (runtime/api/signin.py), shared with the JSON route.
"""

from __future__ import annotations

import math
from typing import Any

import trio
from quart import Response, request

from runtime.api.guard import COOKIE, note_audit, request_remote, request_secure
from runtime.api.signin import ADDRESS_FREE_FAILURES, _local, session_cookie
from runtime.console.context import PREFIX, SECURITY_HEADERS, ConsoleParts, page

KDF_LIMITER_SIZE = 2  # scrypt takes 16 MiB and ~50 ms a try


def register(app: Any, parts: ConsoleParts) -> None:
    """Add POST /ui/signin."""
    users, throttle = parts.access.users, parts.access.throttle
    kdf = trio.CapacityLimiter(KDF_LIMITER_SIZE)

    def again(status: int, message: str, target: str, headers: dict[str, str] | None = None) -> Response:
        reply = page("signin.html", status, title="Sign in", next=target, error=message)
        reply.headers.update(headers or {})
        return reply

    @app.post(f"{PREFIX}/signin")
    async def console_signin_form() -> Response:
        form = await request.form
        name, password = (form.get("name") or "").strip(), form.get("password") or ""
        target = form.get("next") or PREFIX
        target = target if _local(target) else PREFIX
        own = f"{'https' if request_secure(request) else 'http'}://{request.host}".lower()
        origin = request.headers.get("Origin")
        if origin is not None and origin.lower() != own:
            return again(403, f"cross-origin sign-in refused (Origin is not {own})", target)
        if not name or not password:
            return again(400, "give your user name and password", target)
        remote = request_remote(request) or "?"
        wait = max(throttle.retry_after(f"user:{name}"), throttle.retry_after(f"addr:{remote}", ADDRESS_FREE_FAILURES))
        if wait > 0:
            return again(429, f"too many failed sign-ins; try again in {math.ceil(wait)} s", target,
                         {"Retry-After": str(math.ceil(wait))})
        user = await trio.to_thread.run_sync(users.check_password, name, password, limiter=kdf)
        if user is None:
            throttle.failed(f"user:{name}")
            throttle.failed(f"addr:{remote}")
            note_audit(request, principal=name[:64], kind="password")
            return again(401, "wrong user name or password", target)
        throttle.succeeded(f"user:{name}")
        old = request.cookies.get(COOKIE)
        if old:  # a session fixed before sign-in is never promoted
            await trio.to_thread.run_sync(users.close_session, old)
        session_id, _ = await trio.to_thread.run_sync(users.open_session, user.name)
        note_audit(request, principal=user.name, kind="session", tenant=user.tenant)
        cookie = session_cookie(session_id, secure=request_secure(request), max_age=int(users.session_ttl_s))
        return Response("", 303, {"Location": target, "Set-Cookie": cookie, **SECURITY_HEADERS})
