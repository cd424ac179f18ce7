"""The admin APIs' one gate: who is asking (a Principal), may they, CSRF, and the audit row.

`AccessGuard` wraps the plane's ASGI app. For an admin route (ROUTES) or any state-changing
request under /api, /v1/sessions or /ui it:
  1. resolves the principal: `Authorization: Bearer` with the admin key or a personal access
     token (fcp_...; a bad one is 401 here), else the `flowctl_session` cookie;
  2. for a cookie-authenticated state change, requires the session's CSRF token (header
     X-CSRF-Token, or form field csrf_token) and a same-origin Origin/Referer when sent;
  3. checks the route's action against the role (403 naming role and action);
  4. hands the principal to the route in the ASGI scope (`principal_of(request)`);
  5. after the reply, writes an audit row for every state-changing request, refused ones too.
A request without a principal (a tenant's API key, nothing) passes to the route, which
answers it as before (the API keys' routes) or 401s.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trio

from runtime.api.audit import AuditEntry, AuditLog, now
from runtime.api.auth import bearer_ok
from runtime.api.principals import ADMIN_KEY_PRINCIPAL, Principal, authorize
from runtime.api.responses import ApiError, error_body
from runtime.api.users import TOKEN_PREFIX, UserStore

log = logging.getLogger("flowctl.audit")
COOKIE = "flowctl_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SCOPE_PRINCIPAL = "flowctl.principal"
SCOPE_AUDIT = "flowctl.audit"  # what a route adds to its audit row: {"tenant": ..., "principal": ...}
SCOPE_REMOTE = "flowctl.remote"
SCOPE_SECURE = "flowctl.secure"
SCOPE_ORIGIN = "flowctl.origin"  # scheme://host the client reached (a trusted proxy's X-Forwarded-Proto/-Host)
MAX_FORM_BODY = 64 * 1024
BODY_TIMEOUT = 10.0
GUARDED_PREFIXES = ("/api/", "/v1/sessions", "/mgmt/v1/sessions", "/ui")
# Where a session cookie means nothing (sign-in checks its own Origin and replaces the session).
COOKIE_IGNORED = frozenset({"/api/v1/auth/signin"})
_KEY_ID = re.compile(r"fgk_([0-9a-f]{16})_")
_USER = r"(?P<user>[^/]+)"
# (methods, path, action): None is a route that takes no principal's action (API keys, sign-in).
# "self" routes: a user acting on its own name needs only "self".
ROUTES: list[tuple[frozenset[str], re.Pattern[str], str | None, bool]] = [
    (frozenset(m.split("|")), re.compile(p), a, s) for m, p, a, s in (
        ("GET", r"/api/cluster/(status|tokens)", "cluster.read", False),
        ("POST", r"/api/cluster/tokens", "cluster.write", False),
        ("DELETE", r"/api/cluster/tokens/[^/]+", "cluster.write", False),
        ("POST", r"/api/deployments", "cluster.write", False),
        ("PATCH|DELETE", r"/api/deployments/[^/]+", "cluster.write", False),
        ("PUT", r"/api/services/[^/]+/[^/]+", "hub.write", False),
        ("POST", r"/api/services/[^/]+/[^/]+/[^/]+", "hub.write", False),
        ("POST", r"/api/admin/(gc|fsck)", "hub.write", False),
        ("GET", r"/api/gateway/tenants", "tenants.read", False),
        ("POST", r"/api/gateway/tenants", "tenants.write", False),
        ("PATCH|DELETE", r"/api/gateway/tenants/[^/]+", "tenants.write", False),
        ("GET", r"/api/gateway/keys", "keys.read", False),
        ("POST", r"/api/gateway/keys", "keys.write", False),
        ("DELETE", r"/api/gateway/keys/[^/]+", "keys.write", False),
        ("GET", r"/api/gateway/usage", "usage.read", False),
        ("GET", r"/(mgmt/)?v1/sessions(/[^/]+)?", "sessions.read", False),
        ("DELETE", r"/(mgmt/)?v1/sessions/[^/]+", "sessions.write", False),
        ("POST", r"/(mgmt/)?v1/sessions", None, False),
        ("GET", r"/api/v1/(jobs|runs)(/.*)?", "jobs.read", False),
        ("POST|PUT|DELETE", r"/api/v1/(jobs|runs)(/.*)?", "jobs.write", False),
        ("GET", r"/api/v1/users", "users.read", False),
        ("POST", r"/api/v1/users", "users.write", False),
        ("GET", rf"/api/v1/users/{_USER}", "users.read", False),
        ("PATCH|DELETE", rf"/api/v1/users/{_USER}", "users.write", False),
        ("PUT", rf"/api/v1/users/{_USER}/password", "users.write", True),
        ("GET", rf"/api/v1/users/{_USER}/tokens", "users.read", True),
        ("POST", rf"/api/v1/users/{_USER}/tokens", "users.write", True),
        ("DELETE", rf"/api/v1/users/{_USER}/tokens/[^/]+", "users.write", True),
        ("GET", r"/api/v1/audit", "audit.read", False),
        ("GET", r"/api/v1/auth/me", "self", False),
        ("POST", r"/api/v1/auth/(signin|signout)", None, False),
    )]


def route_action(method: str, path: str, principal: Principal | None = None) -> tuple[bool, str | None]:
    """(whether the path is an admin route, the action it needs) for a request."""
    method = "GET" if method == "HEAD" else method
    for methods, pattern, action, self_ok in ROUTES:
        match = pattern.fullmatch(path)
        if match is not None and method in methods:
            if self_ok and principal is not None and principal.kind != "admin-key" \
                    and match.group("user") == principal.name:
                return True, "self"
            return True, action
    return False, None


def principal_of(request: Any) -> Principal | None:
    """The principal the guard found for this request (a quart request or an ASGI scope), else None."""
    scope = request if isinstance(request, dict) else request.scope
    return scope.get(SCOPE_PRINCIPAL)


current_principal = principal_of


def csrf_token_for(principal: Principal | None) -> str | None:
    """The CSRF token a page must send back with a state change (X-CSRF-Token or form field csrf_token)."""
    return principal.csrf_token if principal is not None else None


def note_audit(request: Any, **fields: str | None) -> None:
    """Add fields (tenant, principal) to this request's audit row; the guard writes it after the reply."""
    scope = request if isinstance(request, dict) else request.scope
    scope.setdefault(SCOPE_AUDIT, {}).update(fields)


def request_remote(request: Any) -> str | None:
    """The client's address as the guard saw it (a trusted proxy's X-Forwarded-For)."""
    scope = request if isinstance(request, dict) else request.scope
    return scope.get(SCOPE_REMOTE)


def request_secure(request: Any) -> bool:
    """Whether the client reached the plane over TLS (directly or at a trusted proxy)."""
    scope = request if isinstance(request, dict) else request.scope
    return bool(scope.get(SCOPE_SECURE))


def request_origin(request: Any) -> str:
    """The plane's own origin as this client reached it (scheme://host, lower case)."""
    scope = request if isinstance(request, dict) else request.scope
    return str(scope.get(SCOPE_ORIGIN, ""))


def require(action: str) -> Callable[[Any], Any]:
    """Decorate a quart view: its request's principal must be allowed `action`, else 401/403 as JSON."""
    from functools import wraps

    from quart import request

    from runtime.api.responses import error_response

    def decorate(view: Any) -> Any:
        @wraps(view)
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            try:
                authorize(principal_of(request), action)
            except ApiError as exc:
                return error_response(exc.status, exc.detail, exc.headers)
            return await view(*args, **kwargs)
        return wrapped
    return decorate


def cookie_value(headers: dict[bytes, bytes], name: str = COOKIE) -> str | None:
    """The value of cookie `name` in a Cookie header, else None."""
    for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value.strip('"')
    return None


class AccessGuard:
    """ASGI middleware in front of the plane's app (see the module docstring)."""

    def __init__(self, app: Any, users: UserStore, audit: AuditLog, admin_key_hash: str, *,
                 trusts: Callable[[str | None], bool] = lambda peer: False,
                 limiter: trio.CapacityLimiter | None = None) -> None:
        self.app = app
        self.users = users
        self.audit = audit
        self.admin_key_hash = admin_key_hash
        self.trusts = trusts
        self.limiter = limiter or trio.CapacityLimiter(4)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(GUARDED_PREFIXES):
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        changing = method not in SAFE_METHODS
        is_route, _ = route_action(method, path)
        if not (is_route or changing or path == "/ui" or path.startswith("/ui/")):
            await self.app(scope, receive, send)  # the hub's public reads: nothing to decide
            return
        headers = {k.lower(): v for k, v in scope["headers"]}
        peer = (scope.get("client") or (None,))[0]
        trusted = self.trusts(peer)
        scope[SCOPE_REMOTE] = _last(headers.get(b"x-forwarded-for")) if trusted and b"x-forwarded-for" in headers \
            else peer
        scope[SCOPE_SECURE] = scope.get("scheme") == "https" or (
            trusted and _last(headers.get(b"x-forwarded-proto")).lower() == "https")
        scope[SCOPE_ORIGIN] = f"{'https' if scope[SCOPE_SECURE] else 'http'}://{self._host(scope, headers)}".lower()
        status = [500]
        principal: Principal | None = None
        audited = not changing  # reads are not audited

        async def audit() -> None:
            # Written before the reply's last byte leaves, so a client that saw the reply finds the row.
            nonlocal audited
            if not audited:
                audited = True
                with trio.CancelScope(shield=True):
                    await self._write_audit(scope, headers, principal, status[0])

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                await audit()
            await send(message)

        try:
            try:
                principal = await self._resolve(headers, cookies=path not in COOKIE_IGNORED)
                scope[SCOPE_PRINCIPAL] = principal
                _, action = route_action(method, path, principal)
                if principal is not None and principal.kind == "session" and changing:
                    receive = await self._check_csrf(scope, headers, receive, principal)
                if principal is not None and action is not None:
                    authorize(principal, action)
            except ApiError as exc:
                status[0] = exc.status
                await audit()
                await _send_error(send, exc)
                return
            await self.app(scope, receive, capture)
        finally:
            await audit()  # a reply cut short (the client left, the route failed) is audited too

    async def _resolve(self, headers: dict[bytes, bytes], *, cookies: bool = True) -> Principal | None:
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if authorization:
            if bearer_ok(authorization, self.admin_key_hash):
                return ADMIN_KEY_PRINCIPAL
            scheme, _, token = authorization.partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token.startswith(TOKEN_PREFIX):
                found = await trio.to_thread.run_sync(self.users.token_principal, token, limiter=self.limiter)
                if found is None:
                    raise ApiError(401, "this personal access token is not valid (unknown, revoked or expired)",
                                   {"WWW-Authenticate": "Bearer"})
                return found
            return None  # an API key (the route checks it) or something the route refuses
        session_id = cookie_value(headers) if cookies else None
        if session_id is None:
            return None
        return await trio.to_thread.run_sync(self.users.session_principal, session_id, limiter=self.limiter)

    async def _check_csrf(self, scope: dict[str, Any], headers: dict[bytes, bytes], receive: Any,
                          principal: Principal) -> Any:
        """The receive to pass on (a form body is read here and replayed); ApiError 403 when refused."""
        own = scope[SCOPE_ORIGIN]
        for name in (b"origin", b"referer"):
            if name in headers:
                sent = headers[name].decode("latin-1")
                parts = urlsplit(sent)
                if f"{parts.scheme}://{parts.netloc}".lower() != own:
                    raise ApiError(403, f"cross-origin request refused ({name.decode().capitalize()} is not {own})")
                break
        token = headers.get(CSRF_HEADER.encode(), b"").decode("latin-1")
        content_type = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if not token and content_type == "application/x-www-form-urlencoded":
            body = await _read_body(receive)
            token = (parse_qs(body.decode("latin-1")).get(CSRF_FIELD) or [""])[0]
            receive = _replay(body, receive)
        expected = principal.csrf_token or ""
        if not token or not hmac.compare_digest(token.encode(), expected.encode()):
            raise ApiError(403, "missing or wrong CSRF token (send the session's token as X-CSRF-Token "
                                "or the form field csrf_token)")
        return receive

    def _host(self, scope: dict[str, Any], headers: dict[bytes, bytes]) -> str:
        peer = (scope.get("client") or (None,))[0]
        if self.trusts(peer) and b"x-forwarded-host" in headers:
            return _last(headers[b"x-forwarded-host"])
        return headers.get(b"host", b"").decode("latin-1")

    async def _write_audit(self, scope: dict[str, Any], headers: dict[bytes, bytes], principal: Principal | None,
                           status: int) -> None:
        noted = scope.get(SCOPE_AUDIT, {})
        role: str | None = None
        tenant: str | None = None
        if principal is not None:
            who, kind, role, tenant = principal.name, principal.kind, principal.role, principal.tenant
        else:
            key = _KEY_ID.search(headers.get(b"authorization", b"").decode("latin-1"))
            who, kind = (f"key:{key.group(1)}", "api-key") if key else ("anonymous", "anonymous")
        _, action = route_action(scope["method"], scope["path"], principal)
        entry = AuditEntry(at=now(), principal=noted.get("principal") or who, kind=noted.get("kind") or kind,
                           role=role, action=action, method=scope["method"], target=scope["path"][:512],
                           tenant=tenant or noted.get("tenant"), remote=scope.get(SCOPE_REMOTE), status=status)
        try:
            await trio.to_thread.run_sync(self.audit.record, entry, limiter=self.limiter)
        except Exception:  # an audit failure must be loud but must not turn a sent reply into a 500
            log.exception("could not write the audit row for %s %s",
                                                         scope["method"], scope["path"])


def _last(value: bytes | None) -> str:
    """The last comma-separated item (the nearest proxy's)."""
    return (value or b"").decode("latin-1").split(",")[-1].strip()


async def _read_body(receive: Any) -> bytes:
    parts: list[bytes] = []
    size = 0
    with trio.move_on_after(BODY_TIMEOUT):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ApiError(400, "the client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_FORM_BODY:
                raise ApiError(413, f"a form body may have at most {MAX_FORM_BODY} bytes")
            parts.append(chunk)
            if not message.get("more_body"):
                return b"".join(parts)
    raise ApiError(408, f"the form body did not arrive within {BODY_TIMEOUT:g} s")


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay


async def _send_error(send: Any, exc: ApiError) -> None:
    data = json.dumps(error_body(exc.detail)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
               *((k.lower().encode(), v.encode()) for k, v in exc.headers.items())]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
