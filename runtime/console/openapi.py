"""The console's part of the plane's OpenAPI description: HTML pages and HTML forms, not a JSON API.

Every /ui route is listed so the description stays complete; the pages answer text/html
(303 to /ui/signin without a session), the forms take application/x-www-form-urlencoded
with the session's csrf_token and answer 303 back to a page.
"""

from __future__ import annotations

from typing import Any

from runtime.api.openapi import Part

_SECURITY: list[dict[str, list[str]]] = [{"sessionCookie": []}, {"adminKey": []}, {"personalToken": []}]
_HTML = {"200": {"description": "the page (text/html)", "content": {"text/html": {"schema": {"type": "string"}}}},
         "303": {"description": "no session: to /ui/signin?next=..."},
         "403": {"description": "the role may not see this page (an HTML error page)"},
         "404": {"description": "no such object, or another tenant's (an HTML error page)"}}
_FORM_DONE = {"303": {"description": "done (or refused with a one-line notice): back to the page"},
              "403": {"description": "the role may not, or the CSRF token / Origin is wrong"}}


def _param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _page(summary: str, *params: str, query: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"get": {"summary": summary, "security": _SECURITY, "responses": _HTML,
                    "parameters": [_param(p) for p in params]
                    + [{"name": q, "in": "query", "required": False, "schema": {"type": "string"}} for q in query]}}


def _form(summary: str, *params: str, fields: tuple[str, ...] = ()) -> dict[str, Any]:
    properties = {"csrf_token": {"type": "string"}, **{f: {"type": "string"} for f in fields}}
    return {"post": {"summary": summary, "security": _SECURITY, "responses": _FORM_DONE,
                     "parameters": [_param(p) for p in params],
                     "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {
                         "schema": {"type": "object", "required": ["csrf_token"], "properties": properties}}}}}}


def _merge(*items: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for item in items:
        merged.update(item)
    return merged


PATHS: dict[str, Any] = {
    "/ui": _page("Overview: nodes (a page of 100, not ready first), deployments, models, recent cluster changes",
                 query=("page",)),
    "/ui/signin": _merge(_page("The sign-in form", query=("next",)), {"post": {
        "summary": "Sign in (as POST /api/v1/auth/signin, answered as a page)", "security": [],
        "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
            "type": "object", "required": ["name", "password"], "properties": {
                "name": {"type": "string"}, "password": {"type": "string"}, "next": {"type": "string"}}}}}},
        "responses": {"303": {"description": "signed in: the session cookie, then to next"},
                      "400": {"description": "the form again, saying what is missing"},
                      "401": {"description": "the form again: wrong user name or password"},
                      "403": {"description": "a sign-in from another origin"},
                      "429": {"description": "too many failures: the form again, with Retry-After"}}}}),
    "/ui/signout": _form("Sign out: ends the session server-side"),
    "/ui/assets/{name}": {"get": {"summary": "The console's script and stylesheet", "parameters": [_param("name")],
                                  "responses": {"200": {"description": "console.js or console.css"},
                                                "404": {"description": "no such file"}}}},
    "/ui/nodes/{node_id}": _page("A node: resources, replicas with attempts and last words", "node_id"),
    "/ui/deployments": _merge(_page("Deployments with deploy, scale and undeploy forms", query=("notice",)),
                              _form("Deploy a service", fields=("service", "version", "replicas"))),
    "/ui/deployments/{service}/scale": _form("Scale a deployment", "service", fields=("replicas",)),
    "/ui/deployments/{service}/undeploy": _form("Remove a deployment", "service"),
    "/ui/hub": _page("Hub services, versions, flags, signatures, download ranking"),
    "/ui/hub/{service}/{version}/{action}": _form("stable, unstable, yank or unyank a version",
                                                  "service", "version", "action"),
    "/ui/tenants": _merge(_page("Tenants and their API keys"), _form("Create a tenant", fields=("name",))),
    "/ui/tenants/{name}/limits": _form("Set a tenant's limits (an empty field: unlimited)", "name",
                                       fields=("rpm", "tpm", "max_concurrency", "max_sessions")),
    "/ui/keys": _form("Create an API key (shown once in the reply)", fields=("tenant", "name")),
    "/ui/keys/{key_id}/revoke": _form("Revoke an API key", "key_id"),
    "/ui/usage": _page("Usage per tenant and model over time (SVG chart)", query=("tenant", "metric")),
    "/ui/sessions": _page("Active realtime sessions"),
    "/ui/sessions/{session_id}/close": _form("Close a session", "session_id"),
    "/ui/jobs": _page("Job definitions and recent runs"),
    "/ui/jobs/{tenant}/{name}": _page("A job: its parameters, trigger and suspend forms, its runs", "tenant", "name"),
    "/ui/jobs/{tenant}/{name}/trigger": _form("Trigger a run (fields param.NAME)", "tenant", "name"),
    "/ui/jobs/{tenant}/{name}/{action}": _form("suspend or resume a job", "tenant", "name", "action"),
    "/ui/runs/{run_id}": _page("A run: its step graph, attempts and live log", "run_id"),
    "/ui/runs/{run_id}/log": {"get": {"summary": "The run's log as server-sent events (event attempt, data lines, "
                                                 "event end)", "security": _SECURITY, "parameters": [_param("run_id")],
                                      "responses": {"200": {"description": "text/event-stream"}}}},
    "/ui/runs/{run_id}/live": {"get": {"summary": "The run's step graph and attempts as server-sent events (event "
                                                  "fragment: {id, html}) when they change; event end once it ended",
                                       "security": _SECURITY, "parameters": [_param("run_id")],
                                       "responses": {"200": {"description": "text/event-stream"}}}},
    "/ui/runs/{run_id}/cancel": _form("Cancel a run", "run_id"),
    "/ui/audit": _page("The audit log"),
    "/ui/users": _merge(_page("Users (admins)"), _form("Create a user", fields=("name", "role", "tenant", "password"))),
    "/ui/users/{name}/delete": _form("Remove a user", "name"),
    "/ui/users/{name}/role": _form("Change a user's role (its sessions end)", "name", fields=("role", "tenant")),
    "/ui/users/{name}/password": _form("Reset a user's password (its sessions end)", "name", fields=("password",)),
    "/ui/live/status": {"get": {"summary": "Node and deployment tables as server-sent events (event fragment: "
                                           "{id, html}) when they change", "security": _SECURITY,
                                "parameters": [{"name": "forms", "in": "query", "required": False,
                                                "schema": {"type": "string", "enum": ["1"]}},
                                               {"name": "page", "in": "query", "required": False,
                                                "schema": {"type": "integer", "minimum": 0}}],
                                "responses": {"200": {"description": "text/event-stream"}}}},
    "/ui/live/nodes/{node_id}": {"get": {"summary": "A node page's replicas and worker logs as server-sent events "
                                                    "(event fragment: {id, html}) when they change",
                                         "security": _SECURITY, "parameters": [_param("node_id")],
                                         "responses": {"200": {"description": "text/event-stream"}}}},
}


def part() -> Part:
    """The console's routes as one tagged part."""
    return Part("console", "The web console at /ui: HTML pages and forms (docs/console.md).", PATHS)
