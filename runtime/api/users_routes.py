"""The users API and the audit log's API under /api/v1/ (admins; a user's own tokens and password).

    GET    /api/v1/users                          users                                  (users.read)
    POST   /api/v1/users                          {name, role, tenant?, password} -> 201 (users.write)
    GET    /api/v1/users/{name}                   one user                               (users.read)
    PATCH  /api/v1/users/{name}                   {role, tenant?}                        (users.write)
    DELETE /api/v1/users/{name}                   remove, with its tokens and sessions   (users.write)
    PUT    /api/v1/users/{name}/password          {password[, current_password]} -> 204  (users.write or self)
    GET    /api/v1/users/{name}/tokens            its personal access tokens             (users.read or self)
    POST   /api/v1/users/{name}/tokens            {name?, expires_at?} -> 201, shown once (users.write or self)
    DELETE /api/v1/users/{name}/tokens/{id}       revoke                                 (users.write or self)
    GET    /api/v1/audit                          ?since= ?user= ?tenant= ?limit=        (audit.read)

A user changing its own password gives the current one too.
"""

from __future__ import annotations

import math
from typing import Any

import trio
from quart import Response, request

from runtime.api.audit import AuditLog
from runtime.api.guard import principal_of, route_action
from runtime.api.principals import Principal, authorize, tenant_scope
from runtime.api.responses import ApiError, error_response, json_response
from runtime.api.users import UserStore
from runtime.http.jsonbody import InvalidJson, decode_json

PREFIX = "/api/v1"


def register(app: Any, users: UserStore, audit: AuditLog) -> None:
    """Attach the users and audit routes to a quart-trio app."""
    limiter = trio.CapacityLimiter(2)

    async def db(fn: Any, *args: Any) -> Any:
        return await trio.to_thread.run_sync(lambda: fn(*args), limiter=limiter)

    def check() -> Principal:
        who = principal_of(request)
        return authorize(who, route_action(request.method, request.path, who)[1] or "users.write")

    async def body() -> dict[str, Any]:
        try:
            data = decode_json(await request.get_data(cache=False, as_text=False, parse_form_data=False))
        except InvalidJson as exc:
            raise ApiError(400, str(exc)) from None
        if not isinstance(data, dict):
            raise ApiError(400, "the request body must be a JSON object")
        return data

    def answer(handler: Any) -> Any:
        async def wrapped(**kwargs: Any) -> Response:
            try:
                return await handler(**kwargs)
            except ApiError as exc:
                return error_response(exc.status, exc.detail, exc.headers)
        wrapped.__name__ = handler.__name__
        return wrapped

    @answer
    async def list_users() -> Response:
        check()
        return json_response([u.public() for u in await db(users.users)])

    @answer
    async def create_user() -> Response:
        check()
        data = await body()
        password = data.get("password")
        if not isinstance(password, str):
            raise ApiError(400, "'password' is required")
        user = await db(users.create_user, data.get("name"), data.get("role"), password, data.get("tenant"))
        return json_response(user.public(), 201)

    @answer
    async def get_user(name: str) -> Response:
        check()
        return json_response((await db(users.user, name)).public())

    @answer
    async def update_user(name: str) -> Response:
        check()
        data = await body()
        return json_response((await db(users.update_user, name, data.get("role"), data.get("tenant"))).public())

    @answer
    async def delete_user(name: str) -> Response:
        check()
        await db(users.delete_user, name)
        return Response("", status=204)

    @answer
    async def set_password(name: str) -> Response:
        who = check()
        data = await body()
        password = data.get("password")
        if not isinstance(password, str):
            raise ApiError(400, "'password' is required")
        if who.kind != "admin-key" and who.name == name and who.role != "admin":
            current = data.get("current_password")
            if not isinstance(current, str) or await db(users.check_password, name, current) is None:
                raise ApiError(403, "changing your own password needs current_password")
        await db(users.set_password, name, password)
        return Response("", status=204)

    @answer
    async def list_tokens(name: str) -> Response:
        check()
        return json_response([t.public() for t in await db(users.tokens, name)])

    @answer
    async def create_token(name: str) -> Response:
        check()
        data = await body()
        expires = data.get("expires_at")
        if expires is not None and (isinstance(expires, bool) or not isinstance(expires, int | float)
                                    or not math.isfinite(expires)):
            raise ApiError(400, "'expires_at' must be a Unix time")
        token, record = await db(users.create_token, name, data.get("name", ""), expires)
        return json_response({**record.public(), "token": token}, 201, {"Cache-Control": "no-store"})

    @answer
    async def revoke_token(name: str, token_id: str) -> Response:
        check()
        await db(users.revoke_token, name, token_id)
        return Response("", status=204)

    @answer
    async def list_audit() -> Response:
        who = check()
        args = request.args
        since = _number(args.get("since"), "since")
        limit = int(_number(args.get("limit"), "limit") or 1000)
        tenant = tenant_scope(who, args.get("tenant"))
        rows = await db(lambda: audit.entries(since=since, principal=args.get("user"), tenant=tenant, limit=limit))
        return json_response({"entries": rows})

    routes = (
        ("/users", "GET", list_users), ("/users", "POST", create_user),
        ("/users/<name>", "GET", get_user), ("/users/<name>", "PATCH", update_user),
        ("/users/<name>", "DELETE", delete_user), ("/users/<name>/password", "PUT", set_password),
        ("/users/<name>/tokens", "GET", list_tokens), ("/users/<name>/tokens", "POST", create_token),
        ("/users/<name>/tokens/<token_id>", "DELETE", revoke_token), ("/audit", "GET", list_audit),
    )
    for path, method, view in routes:
        app.add_url_rule(PREFIX + path, f"users_api_{view.__name__}", view, methods=[method])


def _number(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise ApiError(400, f"{name}: expected a number, got {value[:20]!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ApiError(400, f"{name}: expected a non-negative number")
    return number
