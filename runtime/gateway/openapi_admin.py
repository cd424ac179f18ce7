"""The admin API's part of the gateway's OpenAPI description (/api/gateway/*, the admin key only).

Schemas follow what runtime/gateway/service.py answers; tests/runtime/gateway/test_openapi.py
checks that every route it matches is described here and the other way round.
"""

from __future__ import annotations

from runtime.api import ERROR_SCHEMA
from runtime.dispatch.dispatcher import VIAS
from runtime.gateway.keys import TENANT_NAME
from runtime.gateway.service import MAX_LIMIT

SECURITY: list[dict[str, list[str]]] = [{"adminKey": []}]
_INT = {"type": "integer"}
_TIME = {"type": "number", "description": "Unix time"}


def _nullable(schema: dict) -> dict:
    return {**schema, "nullable": True}


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/Error"}}}}


def _json(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _list_of(name: str) -> dict:
    return {"type": "array", "items": {"$ref": f"#/components/schemas/{name}"}}


_LIMIT = _nullable({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT})
_LIMITS_IN = {"rpm": {**_LIMIT, "description": "requests per minute"},
              "tpm": {**_LIMIT, "description": "tokens per minute"},
              "max_concurrency": {**_LIMIT, "description": "requests in flight (session replies included)"}}
_MAX_SESSIONS_IN = {"max_sessions": _nullable({
    "type": "integer", "minimum": 0, "maximum": MAX_LIMIT,
    "description": "realtime sessions open at once (0: none; null: the plane's default)"})}
_TENANT_LIMITS_IN = {**_LIMITS_IN, **_MAX_SESSIONS_IN}
_LIMITS_OUT = {name: _nullable(_INT) for name in _LIMITS_IN}
_TENANT = {"name": {"type": "string"}, **_LIMITS_OUT, "max_sessions": _nullable(_INT), "created_at": _TIME}
_KEY = {"key_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"}, "tenant": {"type": "string"},
        "name": {"type": "string"}, **_LIMITS_OUT,
        "models": {"type": "array", "items": {"type": "string"}}, "expires_at": _nullable(_TIME),
        "created_at": _TIME, "revoked": {"type": "boolean"}}
_USAGE = {"day": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"}, "tenant": {"type": "string"},
          "key_id": {"type": "string"}, "model": {"type": "string"},
          "via": {"type": "string", "enum": list(VIAS), "description": "how the calls came: the /v1 HTTP API, "
                  "realtime sessions or jobs"}, "requests": _INT,
          "prompt_tokens": _INT, "completion_tokens": _INT}


def _object(props: dict, required: list[str] | None = None) -> dict:
    required = list(props) if required is None else required
    # OpenAPI 3.0 wants a non-empty "required" list, or none at all.
    return {"type": "object", **({"required": required} if required else {}), "properties": props}


SCHEMAS = {
    "Error": ERROR_SCHEMA,
    "Tenant": _object(_TENANT),
    "TenantListed": _object({**_TENANT, "keys": {**_INT, "description": "live (unrevoked) keys"}}),
    "Key": _object(_KEY),
    "KeyCreated": _object({**_KEY, "key": {"type": "string", "pattern": "^fgk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$",
                                           "description": "the key itself, shown only in this reply"}}),
    "Usage": _object(_USAGE),
}

_TENANT_IN = _object({"name": {"type": "string", "pattern": f"^{TENANT_NAME.pattern}$"}, **_TENANT_LIMITS_IN},
                     ["name"])
_TENANT_CHANGES = {**_object(_TENANT_LIMITS_IN, []), "minProperties": 1, "additionalProperties": False,
                   "description": "the limits to change (null: unlimited); the others stay as they are"}
_KEY_IN = _object({
    "tenant": {"type": "string", "description": "an existing tenant (404 otherwise)"},
    "name": {"type": "string", "description": "a label for listings"}, **_LIMITS_IN,
    "models": _nullable({"type": "array", "items": {"type": "string", "minLength": 1, "pattern": "^[^,]*$"},
                         "description": "fnmatch patterns of the models the key may use; empty: all"}),
    "expires_at": _nullable(_TIME),
}, ["tenant"])
_TENANT_QUERY = [{"name": "tenant", "in": "query", "required": False, "schema": {"type": "string"},
                  "description": "only this tenant's"}]
_COMMON = {"401": _error("not the admin key (WWW-Authenticate: Bearer)")}
_BODY_ERRORS = {"400": _error("not a JSON object, or a field of the wrong type or range"),
                "408": _error("the body did not arrive within 10 s"),
                "413": _error("body over 64 KiB (refused unread when Content-Length says so)")}


def _op(summary: str, responses: dict, *, body: dict | None = None, params: list | None = None) -> dict:
    op = {"summary": summary, "security": SECURITY, "responses": {**responses, **_COMMON}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    return op


def _path_param(name: str, description: str) -> list[dict]:
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}]


PATHS = {
    "/api/gateway/tenants": {
        "get": _op("Every tenant with its limits and count of live keys",
                   {"200": _json("tenants by name", _list_of("TenantListed"))}),
        "post": _op("Create a tenant", {"201": _json("the tenant", {"$ref": "#/components/schemas/Tenant"}),
                                        **_BODY_ERRORS, "409": _error("the name is taken")}, body=_TENANT_IN),
    },
    "/api/gateway/tenants/{name}": {
        "patch": _op("Change some of a tenant's limits; they apply at once, to open sessions too",
                     {"200": _json("the tenant", {"$ref": "#/components/schemas/Tenant"}), **_BODY_ERRORS,
                      "404": _error("no such tenant")}, body=_TENANT_CHANGES, params=_path_param("name", "the tenant")),
        "delete": _op("Remove a tenant and revoke its keys",
                      {"204": {"description": "removed"}, "404": _error("no such tenant")},
                      params=_path_param("name", "the tenant")),
    },
    "/api/gateway/keys": {
        "get": _op("Every key (never its secret), oldest first", {"200": _json("keys", _list_of("Key"))},
                   params=_TENANT_QUERY),
        "post": _op("Create a key for a tenant", {
            "201": _json("the key's record and the key itself", {"$ref": "#/components/schemas/KeyCreated"}),
            **_BODY_ERRORS, "404": _error("no such tenant")}, body=_KEY_IN),
    },
    "/api/gateway/keys/{key_id}": {
        "delete": _op("Revoke a key (at once; idempotent)",
                      {"204": {"description": "revoked"}, "404": _error("no such key")},
                      params=_path_param("key_id", "the key's id (16 hex digits, the part after fgk_)")),
    },
    "/api/gateway/usage": {
        "get": _op("Requests and tokens per day, tenant, key, model and via (pending counts flushed first)",
                   {"200": _json("usage rows", _list_of("Usage"))}, params=_TENANT_QUERY),
    },
}
