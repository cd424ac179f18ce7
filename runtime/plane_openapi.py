"""The plane's one OpenAPI description: each role's part, for the roles this process runs.

A component adds its routes by describing them in its own part (runtime/hub/openapi.py,
runtime/scheduler/openapi.py, runtime/gateway/openapi.py and openapi_admin.py,
runtime/sessions/openapi.py); this module only picks the parts. The test
tests/runtime/api/test_plane_openapi.py walks every served route of every role
combination and fails on one that no part describes.
"""

from __future__ import annotations

import json
from typing import Any

from runtime.api import ERROR_SCHEMA, users_openapi
from runtime.api.openapi import DOCUMENT_PATH, EXPLORER_PATH, Part, document
from runtime.console import openapi as console_openapi
from runtime.gateway import openapi as gateway_openapi
from runtime.hub import openapi as hub_openapi
from runtime.jobs import openapi as jobs_openapi
from runtime.scheduler import openapi as cluster_openapi
from runtime.sessions import openapi as session_openapi

TITLE = "flowctl control plane"
ADMIN_PREFIX = "/api/gateway/"
# Described by the plane itself: /health answers for every role.
PLANE_PATHS = ("/health", DOCUMENT_PATH, EXPLORER_PATH)
SECURITY_SCHEMES = {
    "adminKey": {"type": "http", "scheme": "bearer",
                 "description": "the control plane's admin key (FLOWCTL_ADMIN_KEY; clients: FLOWCTL_TOKEN)"},
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "an API key (fgk_...); not needed when the plane runs --anonymous-tenant"},
    "metricsToken": {"type": "http", "scheme": "bearer",
                     "description": "FLOWCTL_METRICS_TOKEN: reads /metrics and nothing else"},
}
_HEALTH = {"type": "object", "required": ["status", "service", "roles"], "properties": {
    "status": {"type": "string", "enum": ["healthy"], "description": "seed 002's word"},
    "service": {"type": "string"}, "roles": {"type": "object", "description": "one entry per role running here"},
    "active_sessions": {"type": "integer", "description": "with the gateway role"},
    "max_sessions": {"type": "integer", "description": "with the gateway role"}}}


def _plane_part() -> Part:
    paths = {
        "/health": {"get": {"summary": "Liveness of every role here, with seed 002's fields",
                            "responses": {"200": {"description": "healthy", "content": {
                                "application/json": {"schema": _HEALTH}}}}}},
        DOCUMENT_PATH: {"get": {"summary": "This description (OpenAPI 3.0), for the roles running here",
                                "responses": {"200": {"description": "OpenAPI JSON"}}}},
        EXPLORER_PATH: {"get": {"summary": "The interactive API explorer (a page; works offline)",
                                "responses": {"200": {"description": "HTML"}}}},
    }
    return Part("plane", "Health and this description.", paths, {"Error": ERROR_SCHEMA}, SECURITY_SCHEMES)


def _hub_part() -> Part:
    spec = hub_openapi.spec()
    paths = {p: item for p, item in spec["paths"].items() if p not in PLANE_PATHS}
    actions = "/api/services/{service_id}/{version}/{action}"
    if actions in paths and "get" not in paths[actions]:
        # The route answers GET too, to say the action needs POST.
        paths[actions] = {**paths[actions], "get": {
            "summary": "Always 405: stable, unstable, yank and unyank need POST",
            "parameters": paths[actions]["post"].get("parameters", []),
            "responses": {"405": {"description": "use POST"}, "404": {"description": "no such action"}}}}
    return Part("hub", "Bundles, blobs and models (seed 001's hub).", paths,
                spec.get("components", {}).get("schemas", {}))


def _gateway_parts() -> list[Part]:
    doc = json.loads(gateway_openapi.document())
    schemas = doc.get("components", {}).get("schemas", {})
    v1 = {p: item for p, item in doc["paths"].items() if not p.startswith(ADMIN_PREFIX)}
    admin = {p: item for p, item in doc["paths"].items() if p.startswith(ADMIN_PREFIX)}
    return [Part("gateway", "The OpenAI-compatible API (API keys) and metrics.", v1, schemas),
            Part("gateway admin", "Tenants, API keys and usage (the admin key).", admin, schemas),
            Part("sessions", "Seed 002's realtime sessions: the management API and the WebSocket.",
                 session_openapi.PATHS, session_openapi.SCHEMAS)]


def hub_document(version: str = "0") -> dict[str, Any]:
    """The OpenAPI document of a hub served alone (`flowctl serve --roles hub`): its own /health."""
    hub = _hub_part()
    own_health = {"/health": hub_openapi.spec()["paths"]["/health"]}
    plane = _plane_part()
    docs = {p: item for p, item in plane.paths.items() if p != "/health"}
    return document([Part("plane", "This description.", docs, plane.schemas, SECURITY_SCHEMES),
                     Part(hub.tag, hub.description, {**own_health, **hub.paths}, hub.schemas)],
                    title="flowctl hub", version=version, description="The hub alone: bundles, blobs and models.")


def plane_document(roles: tuple[str, ...], version: str = "0") -> dict[str, Any]:
    """The OpenAPI document of a plane running `roles`."""
    parts = [_plane_part()]
    if "hub" in roles:
        parts.append(_hub_part())
    if "scheduler" in roles:
        parts.append(Part("cluster", "Nodes, deployments and join tokens (the admin key).", cluster_openapi.PATHS))
    if "gateway" in roles:
        parts.extend(_gateway_parts())
    if "jobs" in roles:
        parts.append(jobs_openapi.part(nodes="scheduler" in roles))
    parts.append(users_openapi.part())  # every plane process has its users, sign-in and audit log
    parts.append(console_openapi.part())  # and its web console
    return document(parts, title=TITLE, version=version,
                    description=f"Roles running here: {', '.join(roles)}. Admin API errors are "
                                "{\"detail\": message}; the /v1 API's are OpenAI's. Every admin route also "
                                "takes a user's personal access token (fcp_...) or signed-in session cookie, "
                                "within the user's role: 403 names the role and the action it lacks, another "
                                "tenant's object is 404 (docs/users.md).")
