"""The users, sign-in and audit APIs' part of the plane's OpenAPI description (every role serves them)."""

from __future__ import annotations

from typing import Any

from runtime.api.openapi import Part

_ERR = {"$ref": "#/components/schemas/Error"}
_USERS: list[dict[str, list[str]]] = [{"adminKey": []}, {"personalToken": []}, {"sessionCookie": []}]
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}, "description": "user name"}
_TOKEN_ID = {"name": "token_id", "in": "path", "required": True, "schema": {"type": "string"}}
_ROLE = {"type": "string", "enum": ["admin", "operator", "viewer", "tenant-admin", "tenant-viewer"]}
SECURITY_SCHEMES = {
    "personalToken": {"type": "http", "scheme": "bearer",
                      "description": "a user's personal access token (fcp_...; flowctl users token create), "
                                     "carrying the user's role"},
    "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "flowctl_session",
                      "description": "a signed-in browser session; state changes also need its CSRF token "
                                     "(X-CSRF-Token header or csrf_token form field) and a same-origin Origin"},
}
SCHEMAS: dict[str, Any] = {
    "User": {"type": "object", "properties": {
        "name": {"type": "string"}, "role": _ROLE, "tenant": {"type": "string", "nullable": True},
        "created_at": {"type": "number"}}},
    "NewUser": {"type": "object", "required": ["name", "role", "password"], "properties": {
        "name": {"type": "string"}, "role": _ROLE, "password": {"type": "string", "minLength": 10},
        "tenant": {"type": "string", "description": "required for tenant-admin and tenant-viewer"}}},
    "PersonalToken": {"type": "object", "properties": {
        "token_id": {"type": "string"}, "user": {"type": "string"}, "name": {"type": "string"},
        "created_at": {"type": "number"}, "expires_at": {"type": "number", "nullable": True},
        "revoked": {"type": "boolean"},
        "token": {"type": "string", "description": "fcp_...; only in the reply that created it"}}},
    "Principal": {"type": "object", "properties": {
        "name": {"type": "string"}, "role": _ROLE, "tenant": {"type": "string", "nullable": True},
        "kind": {"type": "string", "enum": ["admin-key", "token", "session"]},
        "csrf_token": {"type": "string", "description": "a session's: send it back with every state change"}}},
    "AuditEntry": {"type": "object", "properties": {
        "id": {"type": "integer"}, "at": {"type": "number"}, "principal": {"type": "string"},
        "kind": {"type": "string"}, "role": {"type": "string", "nullable": True},
        "action": {"type": "string", "nullable": True}, "method": {"type": "string"}, "target": {"type": "string"},
        "tenant": {"type": "string", "nullable": True}, "remote": {"type": "string", "nullable": True},
        "status": {"type": "integer"}}},
}
_CODES = {"400": "bad input, naming the field", "401": "not signed in / no valid key or token",
          "403": "this role may not (the error names role and action), or a bad CSRF token / cross-origin",
          "404": "no such user or token", "409": "the name is taken", "429": "too many failed sign-ins (Retry-After)"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _op(summary: str, ok: str, schema: dict[str, Any] | None = None, *, status: str = "200",
        params: list[Any] | None = None, body: dict[str, Any] | None = None,
        errors: tuple[str, ...] = ("401", "403"), security: list[Any] | None = None) -> dict[str, Any]:
    responses: dict[str, Any] = {status: {"description": ok, **({"content": _json(schema)} if schema else {})}}
    for code in errors:
        responses[code] = {"description": _CODES[code], "content": _json(_ERR)}
    op: dict[str, Any] = {"summary": summary, "responses": responses,
                          "security": _USERS if security is None else security}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(body)}
    return op


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_SIGNIN = {"type": "object", "required": ["name", "password"], "properties": {
    "name": {"type": "string"}, "password": {"type": "string"},
    "next": {"type": "string", "description": "form posts: a local path to 303 to after signing in"}}}
PATHS: dict[str, Any] = {
    "/api/v1/users": {
        "get": _op("Users (admins)", "the users", {"type": "array", "items": _ref("User")}),
        "post": _op("Create a user with a role (admins)", "created", _ref("User"), status="201", body=_ref("NewUser"),
                    errors=("400", "401", "403", "409"))},
    "/api/v1/users/{name}": {
        "get": _op("One user", "the user", _ref("User"), params=[_NAME], errors=("401", "403", "404")),
        "patch": _op("Change a user's role and tenant (its browser sessions end)", "the user", _ref("User"),
                     params=[_NAME], body={"type": "object", "properties": {"role": _ROLE, "tenant": {"type": "string"}}},
                     errors=("400", "401", "403", "404")),
        "delete": {**_op("Remove a user with its tokens and sessions", "removed", status="204", params=[_NAME],
                         errors=("401", "403", "404"))}},
    "/api/v1/users/{name}/password": {
        "put": _op("Set a password (admins; a user its own, with current_password); sessions end", "set",
                   status="204", params=[_NAME], errors=("400", "401", "403", "404"),
                   body={"type": "object", "required": ["password"], "properties": {
                       "password": {"type": "string", "minLength": 10}, "current_password": {"type": "string"}}})},
    "/api/v1/users/{name}/tokens": {
        "get": _op("A user's personal access tokens (never the tokens)", "the tokens",
                   {"type": "array", "items": _ref("PersonalToken")}, params=[_NAME], errors=("401", "403", "404")),
        "post": _op("Create a personal access token, shown once; it carries the user's role", "created",
                    _ref("PersonalToken"), status="201", params=[_NAME], errors=("400", "401", "403", "404"),
                    body={"type": "object", "properties": {"name": {"type": "string"},
                                                           "expires_at": {"type": "number"}}})},
    "/api/v1/users/{name}/tokens/{token_id}": {
        "delete": _op("Revoke a personal access token (at once)", "revoked", status="204",
                      params=[_NAME, _TOKEN_ID], errors=("401", "403", "404"))},
    "/api/v1/audit": {
        "get": _op("The audit log, newest first: every state change (tenant roles: their tenant's)", "entries",
                   {"type": "object", "properties": {"entries": {"type": "array", "items": _ref("AuditEntry")}}},
                   errors=("400", "401", "403", "404"), params=[
                       {"name": "since", "in": "query", "required": False, "schema": {"type": "number"},
                        "description": "Unix time"},
                       {"name": "user", "in": "query", "required": False, "schema": {"type": "string"}},
                       {"name": "tenant", "in": "query", "required": False, "schema": {"type": "string"}},
                       {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer"}}])},
    "/api/v1/auth/signin": {
        "post": {**_op("Sign in: sets the flowctl_session cookie (HttpOnly, SameSite=Strict, Secure over TLS)",
                       "signed in", _ref("Principal"), errors=("400", "401", "403", "429"), security=[]),
                 "requestBody": {"required": True, "content": {**_json(_SIGNIN),
                                                               "application/x-www-form-urlencoded": {
                                                                   "schema": _SIGNIN}}}}},
    "/api/v1/auth/signout": {
        "post": _op("Sign out: the session ends server-side", "signed out", status="204", errors=("403",))},
    "/api/v1/auth/me": {
        "get": _op("Who this request is (with a session's CSRF token)", "the principal", _ref("Principal"),
                   errors=("401",))},
}


def part() -> Part:
    """The users, sign-in and audit routes."""
    return Part("users", "Users, roles, personal access tokens, sign-in and the audit log.", PATHS, SCHEMAS,
                SECURITY_SCHEMES)
