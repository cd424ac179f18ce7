"""Browser sign-in and sign-out (the `flowctl_session` cookie), with failed attempts slowed.

    POST /api/v1/auth/signin    JSON or form {name, password[, next]} -> 200 (form with next: 303) + cookie
    POST /api/v1/auth/signout   ends the session server-side (cookie requests need the CSRF token)
    GET  /api/v1/auth/me        who this request is, with the session's CSRF token

The cookie is HttpOnly, SameSite=Strict, and Secure when the request came over TLS (or a
trusted proxy said X-Forwarded-Proto: https). Each sign-in makes a fresh session id and
ends the one the browser came with. After FREE_FAILURES failed tries for one user (or
ADDRESS_FREE_FAILURES from one address), each further try waits twice as long as the last,
up to MAX_DELAY_S, answered 429 with Retry-After: slowed, never locked out for good.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

import trio
from quart import Response, request

from runtime.api.guard import (
    COOKIE,
    note_audit,
    principal_of,
    request_origin,
    request_remote,
    request_secure,
    require,
)
from runtime.api.responses import ApiError, error_response, json_response
from runtime.api.users import UserStore
from runtime.http.jsonbody import InvalidJson, decode_json

FREE_FAILURES = 5
ADDRESS_FREE_FAILURES = 20
MAX_DELAY_S = 300.0
FORGET_AFTER_S = 3600.0
MAX_TRACKED = 10_000
KDF_WAIT_S = 10.0  # how long a sign-in waits for a turn at the password hash before a 503
PREFIX = "/api/v1/auth"


class SigninThrottle:
    """Failed sign-ins per key (a user's name, an address); the wait before the next try.

    Times are trio.current_time(), so tests drive it with an autojump clock.
    """

    def __init__(self, *, free: int = FREE_FAILURES, max_delay_s: float = MAX_DELAY_S) -> None:
        self.free = free
        self.max_delay_s = max_delay_s
        self._failures: dict[str, tuple[int, float]] = {}  # key -> (failures, time of the last)

    def retry_after(self, key: str, free: int | None = None) -> float:
        """Seconds until `key` may try again (0: now)."""
        count, last = self._failures.get(key, (0, 0.0))
        over = count - (self.free if free is None else free)
        if over < 0:
            return 0.0
        delay = min(self.max_delay_s, 2.0 ** over)
        return max(0.0, last + delay - trio.current_time())

    def failed(self, key: str) -> None:
        """Count a failed try."""
        now = trio.current_time()
        count, last = self._failures.get(key, (0, now))
        if now - last > FORGET_AFTER_S:
            count = 0
        if len(self._failures) >= MAX_TRACKED and key not in self._failures:
            oldest = min(self._failures, key=lambda k: self._failures[k][1])
            del self._failures[oldest]
        self._failures[key] = (count + 1, now)

    def succeeded(self, key: str) -> None:
        """Forget `key`'s failures."""
        self._failures.pop(key, None)


def session_cookie(session_id: str, *, secure: bool, max_age: int) -> str:
    """The Set-Cookie value of a session (an empty id with max_age 0 clears it)."""
    return (f"{COOKIE}={session_id}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict"
            + ("; Secure" if secure else ""))


def register(app: Any, users: UserStore, throttle: SigninThrottle | None = None,
             limiter: trio.CapacityLimiter | None = None) -> None:
    """Attach the sign-in routes to a quart-trio app."""
    throttle = throttle or SigninThrottle()
    kdf = limiter or trio.CapacityLimiter(2)  # scrypt takes 16 MiB and ~50 ms a try

    async def fields() -> tuple[dict[str, Any], bool]:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type == "application/x-www-form-urlencoded":
            form = await request.form
            return {k: form.get(k) for k in ("name", "username", "password", "next")}, True
        try:
            data = decode_json(await request.get_data(cache=False, as_text=False, parse_form_data=False))
        except InvalidJson as exc:
            raise ApiError(400, str(exc)) from None
        if not isinstance(data, dict):
            raise ApiError(400, "the request body must be a JSON object {\"name\": ..., \"password\": ...}")
        return data, False

    @app.post(f"{PREFIX}/signin")
    async def signin() -> Response:
        try:
            return await _signin()
        except ApiError as exc:
            return error_response(exc.status, exc.detail, exc.headers)

    async def _signin() -> Response:
        origin = request.headers.get("Origin")
        own = request_origin(request)
        if origin is not None and origin.lower() != own:
            raise ApiError(403, f"cross-origin sign-in refused (Origin is not {own})")
        data, form = await fields()
        name, password = data.get("name") or data.get("username"), data.get("password")
        if not isinstance(name, str) or not name or not isinstance(password, str) or not password:
            raise ApiError(400, "give name and password")
        remote = request_remote(request) or "?"
        wait = max(throttle.retry_after(f"user:{name}"),
                   throttle.retry_after(f"addr:{remote}", ADDRESS_FREE_FAILURES))
        if wait > 0:
            raise ApiError(429, f"too many failed sign-ins; try again in {math.ceil(wait)} s",
                           {"Retry-After": str(math.ceil(wait))})
        with trio.move_on_after(KDF_WAIT_S) as waiting:  # a flood of sign-ins queues here, with a deadline
            await kdf.acquire()
        if waiting.cancelled_caught:
            raise ApiError(503, "sign-in is busy; try again shortly", {"Retry-After": "5"})
        try:
            user = await trio.to_thread.run_sync(users.check_password, name, password)
        finally:
            kdf.release()
        if user is None:
            throttle.failed(f"user:{name}")
            throttle.failed(f"addr:{remote}")
            if await trio.to_thread.run_sync(_exists, users, name):
                note_audit(request, principal=name, kind="password")
            raise ApiError(401, "wrong user name or password")
        throttle.succeeded(f"user:{name}")
        old = request.cookies.get(COOKIE)
        if old:  # a session fixed before sign-in is never promoted
            await trio.to_thread.run_sync(users.close_session, old)
        session_id, principal = await trio.to_thread.run_sync(users.open_session, user.name)
        note_audit(request, principal=user.name, kind="session", tenant=user.tenant)
        cookie = session_cookie(session_id, secure=request_secure(request), max_age=int(users.session_ttl_s))
        target = data.get("next")
        if form and isinstance(target, str) and _local(target):
            return Response("", status=303, headers={"Location": target, "Set-Cookie": cookie})
        return json_response({**principal.public(), "expires_in": int(users.session_ttl_s)}, 200,
                             {"Set-Cookie": cookie, "Cache-Control": "no-store"})

    @app.post(f"{PREFIX}/signout")
    async def signout() -> Response:
        who = principal_of(request)
        # A valid session was let through by the guard with its CSRF token; an unknown or
        # expired cookie has nothing to end server-side, the browser just forgets it.
        session_id = who.session_id if who is not None and who.kind == "session" else None
        if session_id is not None:
            await trio.to_thread.run_sync(users.close_session, session_id)
        return Response("", status=204, headers={"Set-Cookie": session_cookie("", secure=request_secure(request),
                                                                                 max_age=0)})

    @app.get(f"{PREFIX}/me")
    @require("self")
    async def me() -> Response:
        who = principal_of(request)
        assert who is not None
        return json_response(who.public(), headers={"Cache-Control": "no-store"})


def _exists(users: UserStore, name: str) -> bool:
    try:
        users.user(name)
    except ApiError:
        return False
    return True


def _local(target: str) -> bool:
    """Whether a redirect target stays on this site (a path, not //host or a scheme)."""
    parts = urlsplit(target)
    return target.startswith("/") and not target.startswith("//") and not parts.scheme and not parts.netloc \
        and "\\" not in target
