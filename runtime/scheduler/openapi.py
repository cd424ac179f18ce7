"""The cluster API's part of the plane's OpenAPI description (runtime/scheduler/routes.py).

The plane joins it with the other roles' parts (runtime/plane_openapi.py); the test
there walks the served routes and fails on any route described nowhere.
"""

from __future__ import annotations

from typing import Any

from packer.manifest import SERVICE_ID_PATTERN

ADMIN: list[dict[str, list[str]]] = [{"adminKey": []}]
_STR = {"type": "string"}
_NUM = {"type": "number"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/Error"}}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(summary: str, responses: dict[str, Any], *, body: dict[str, Any] | None = None,
        params: list[dict[str, Any]] | None = None, admin: bool = True, description: str = "") -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if admin:
        op["security"] = ADMIN
        op["responses"] = {**responses, "401": _error("not the admin key (WWW-Authenticate: Bearer)")}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    if description:
        op["description"] = description
    return op


def _path(name: str, description: str, pattern: str | None = None) -> dict[str, Any]:
    schema = {"type": "string", **({"pattern": pattern} if pattern else {})}
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


SERVICE = _path("service_id", "the deployed service", SERVICE_ID_PATTERN)
DEPLOYMENT = {"type": "object", "properties": {
    "service": _STR, "version": _STR, "replicas": {"type": "integer"},
    "models": {"type": "array", "items": _STR},
    "nodes": {"type": "array", "items": _STR, "description": "node names it is pinned to; empty: any"},
    "track": {**_STR, "nullable": True, "description": "the channel it follows (stable|latest), or null: pinned"},
    "port": {"type": "integer", "nullable": True, "description": "the port its service.json declares"}}}
_DEPLOY_IN = {"type": "object", "required": ["service"], "properties": {
    "service": {**_STR, "pattern": SERVICE_ID_PATTERN},
    "version": {**_STR, "description": "SemVer or latest (default)"},
    "replicas": {"type": "integer", "minimum": 0, "description": "absent: keep an existing deployment's count (new: 1)"},
    "nodes": {"type": "array", "nullable": True, "items": _STR,
              "description": "pin to these node names; absent: keep the pin; []: anywhere"},
    "track": {**_STR, "nullable": True, "enum": ["", "stable", "latest", None],
              "description": "follow a channel: publishing a newer version upgrades by itself; \"\": pin"}}}
_BAD = {"400": _error("a field is missing or of the wrong type or value"),
        "408": _error("the body did not arrive in time"), "413": _error("body too large")}
_TOKEN = {"type": "object", "properties": {
    "token_id": _STR, "name": _STR, "created_at": _NUM, "expires_at": {**_NUM, "nullable": True},
    "revoked": {"type": "boolean"}, "active": {"type": "boolean"},
    "nodes": {"type": "array", "items": _STR, "description": "nodes that enrolled with it"}}}

PATHS: dict[str, Any] = {
    "/api/cluster/handshake": {"get": _op(
        "Who listens here: kind flowctl-control-plane, cluster id, version and roles (flowctl up uses it)",
        {"200": _json("the handshake", {"type": "object", "properties": {
            "kind": _STR, "cluster_id": _STR, "version": _STR, "roles": {"type": "array", "items": _STR}}})},
        admin=False)},
    "/api/cluster/connect": {"get": _op(
        "A node's control connection (WebSocket upgrade)",
        {"101": {"description": "switched to WebSocket: hello, welcome, heartbeats, assignments, tunnel streams"},
         "401": _error("no valid join token or node credential")},
        admin=False, params=[{"name": "Authorization", "in": "header", "required": True, "schema": _STR,
                              "description": "Bearer JOIN_TOKEN (first join) or the node's credential"}],
        description="Nodes dial out to this WebSocket (runtime/control/messages.py); not for API clients.")},
    "/api/cluster/status": {"get": _op(
        "Nodes (state, heartbeat, requests in flight, resources), deployments with their replicas, models",
        {"200": _json("the cluster", {"type": "object", "properties": {
            "nodes": {"type": "array", "items": {"type": "object"}},
            "deployments": {"type": "array", "items": {"type": "object"}},
            "models": {"type": "array", "items": {"type": "object"}}}})})},
    "/api/deployments": {"post": _op(
        "Deploy a service, or change an existing deployment (version, pin, channel)",
        {"201": _json("the deployment", DEPLOYMENT), **_BAD,
         "404": _error("no such service or version on the hub"),
         "409": _error("it cannot be placed (a model served twice, no node fits)")}, body=_DEPLOY_IN)},
    "/api/deployments/{service_id}": {
        "patch": _op("Scale a deployment", {"200": _json("the deployment", DEPLOYMENT), **_BAD,
                                            "404": _error("not deployed")},
                     body={"type": "object", "required": ["replicas"], "properties": {
                         "replicas": {"type": "integer", "minimum": 0}}}, params=[SERVICE]),
        "delete": _op("Undeploy: its replicas stop", {"204": {"description": "undeployed"},
                                                      "404": _error("not deployed")}, params=[SERVICE]),
    },
    "/api/cluster/tokens": {
        "post": _op("Create a join token (shown only in this reply)",
                    {"201": _json("the token", {"type": "object", "properties": {
                        "token_id": _STR, "name": _STR, "token": _STR, "expires_at": {**_NUM, "nullable": True}}}),
                     **_BAD},
                    body={"type": "object", "required": ["name"], "properties": {
                        "name": {**_STR, "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
                        "ttl_s": {**_NUM, "exclusiveMinimum": True, "minimum": 0}}}),
        "get": _op("Join tokens (never the secret) and the nodes that enrolled with each",
                   {"200": _json("tokens", {"type": "array", "items": _TOKEN})}),
    },
    "/api/cluster/tokens/{token}": {"delete": _op(
        "Revoke a join token by id or name; the nodes that enrolled with it are disconnected",
        {"204": {"description": "revoked"}, "404": _error("no active join token")},
        params=[_path("token", "the token's id or name")])},
}
