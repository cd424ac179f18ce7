"""One OpenAPI description for every route the plane serves, whichever roles run, and the explorer.

For each role combination a real plane starts; every route it serves (quart's url_map,
and the ASGI front door's own paths: the /v1 API, the admin API, /health and the
description itself) must be described, and every described operation must be served.
A route added without a description fails here: describe it in its component's part
(runtime/plane_openapi.py names them).
"""

import re
from functools import partial

import httpx
import pytest
import trio
from schemathesis.specs.openapi.definitions import OPENAPI_30_VALIDATOR
from werkzeug.exceptions import HTTPException

from flowctl.commands.serve import _with_api_docs
from runtime.api.openapi import DescriptionConflict, Part, document, operations
from runtime.gateway import app as gateway_app
from runtime.gateway.validate import ENDPOINTS
from runtime.hub import HubSettings, serve_hub
from runtime.jobs import batch_api
from runtime.plane import PlaneSettings, serve_control_plane
from runtime.plane_openapi import hub_document, plane_document
from tests.runtime.gateway.test_openapi import admin_routes

ADMIN = "openapi-admin-key"
ROLE_SETS = [("hub",), ("scheduler",), ("hub", "scheduler"), ("scheduler", "gateway"), ("jobs",), ("hub", "jobs"),
             ("hub", "scheduler", "gateway"), ("hub", "scheduler", "gateway", "jobs")]
IGNORED = {"HEAD", "OPTIONS"}  # implied by GET, and answered by the framework


def front_door_routes(roles):
    """The routes answered in front of quart: the description, /health and the gateway's own paths."""
    routes = {("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/health")}
    if "gateway" in roles:
        routes |= {("POST" if path in ENDPOINTS else "GET", path) for path in gateway_app.PATHS}
        routes |= admin_routes()
        routes |= batch_api.ROUTES  # the Files and Batches API (503 without the jobs role)
    return routes


def quart_routes(app):
    """{(METHOD, rule)} of quart's url_map; a WebSocket route counts as the GET that upgrades."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        methods = {"GET"} if rule.websocket else set(rule.methods) - IGNORED
        routes |= {(method, _key(rule)) for method in methods}
    return routes


def concrete(path):
    """A described path with a value in each parameter, as a client would send it."""
    return re.sub(r"\{[^}]+\}", "x1", path)


def routed_rule(adapter, method, path):
    """The url_map rule a request would reach, or None."""
    for websocket in (False, True):
        try:
            rule, _ = adapter.match(concrete(path), method=method, return_rule=True, websocket=websocket)
        except HTTPException:
            continue
        return _key(rule)
    return None


def _key(rule):
    return rule.rule, rule.websocket


async def start(nursery, tmp_path, roles):
    settings = PlaneSettings(data_dir=tmp_path / "-".join(roles), port=0, roles=roles)
    return await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))


@pytest.mark.parametrize("roles", ROLE_SETS, ids=["+".join(r) for r in ROLE_SETS])
async def test_every_served_route_is_described_and_every_described_one_served(nursery, tmp_path, roles):
    with trio.fail_after(30):
        handle = await start(nursery, tmp_path, roles)
        async with httpx.AsyncClient(base_url=handle.url, timeout=10) as client:
            r = await client.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc == plane_document(roles, doc["info"]["version"])
    described = operations(doc)
    front = front_door_routes(roles)
    adapter = handle.app.url_map.bind("localhost")
    # Served -> described: each quart rule and method is reached by some described operation.
    reached = {(method, routed_rule(adapter, method, path)) for method, path in described}
    missing = sorted(f"{method} {rule}" for method, (rule, _) in quart_routes(handle.app)
                     if (method, (rule, _)) not in reached and (method, _template(rule)) not in front)
    assert not missing, f"served but not in /openapi.json: {missing}"
    assert not sorted(front - described), f"served in front of quart but not described: {sorted(front - described)}"
    # Described -> served: no operation describes a route these roles do not serve.
    phantom = sorted(f"{m} {p}" for m, p in described
                     if (m, p) not in front and (m, routed_rule(adapter, m, p)) not in quart_routes(handle.app))
    assert not phantom, f"described but not served with roles {roles}: {phantom}"


async def test_a_hub_served_alone_describes_its_routes_and_has_the_explorer(nursery, tmp_path):
    """`flowctl serve --roles hub` runs the hub without the plane: the same /openapi.json and /docs."""
    apps = []

    def wrap(app):
        _with_api_docs(app)  # what the CLI hands serve_hub
        apps.append(app)

    with trio.fail_after(30):
        urls = await nursery.start(partial(serve_hub, HubSettings(data_dir=tmp_path / "hub", port=0),
                                           admin_key=ADMIN, wrap_app=wrap))
        async with httpx.AsyncClient(base_url=str(urls[0]), timeout=10) as client:
            doc = (await client.get("/openapi.json")).json()
            page = await client.get("/docs")
            health = (await client.get("/health")).json()
    assert doc["info"]["title"] == "flowctl hub" and doc["paths"] == hub_document()["paths"]
    assert "fetch(" in page.text and health["status"] == "ok"
    described = operations(doc)
    front = {("GET", "/openapi.json"), ("GET", "/docs")}
    adapter = apps[0].url_map.bind("localhost")
    reached = {(method, routed_rule(adapter, method, path)) for method, path in described}
    served = quart_routes(apps[0])
    assert not sorted(f"{m} {rule}" for m, (rule, ws) in served if (m, (rule, ws)) not in reached)
    assert not sorted(f"{m} {p}" for m, p in described
                      if (m, p) not in front and (m, routed_rule(adapter, m, p)) not in served)
    assert not list(OPENAPI_30_VALIDATOR.iter_errors(doc))


def _template(rule):
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)


async def test_the_description_names_every_role_part_and_security_scheme(nursery, tmp_path):
    with trio.fail_after(30):
        handle = await start(nursery, tmp_path, ("hub", "scheduler", "gateway"))
        async with httpx.AsyncClient(base_url=handle.url, timeout=10) as client:
            doc = (await client.get("/openapi.json")).json()
            # The older, per-component URLs keep working.
            assert (await client.get("/v1/openapi.json")).json()["paths"]["/v1/chat/completions"]
            head = await client.head("/openapi.json")
            refused = await client.post("/openapi.json")
    assert head.status_code == 200 and head.content == b""
    assert refused.status_code == 405
    assert [t["name"] for t in doc["tags"]] == ["plane", "hub", "cluster", "gateway", "gateway admin", "sessions", "users",
                                                   "console"]
    schemes = set(doc["components"]["securitySchemes"])
    for item in doc["paths"].values():
        for op in item.values():
            for requirement in op.get("security", []):
                assert set(requirement) <= schemes
    for path in ("/api/deployments", "/api/cluster/status", "/v1/sessions", "/mgmt/v1/sessions/{session_id}",
                 "/ws/ws/{session_id}", "/api/gateway/keys", "/metrics", "/v1/chat/completions",
                 "/api/services/{service_id}/{version}/checksum"):
        assert path in doc["paths"], path
    _no_dangling_refs(doc)


def _no_dangling_refs(node, doc=None):
    doc = doc or node
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            assert ref.split("/")[-1] in doc["components"]["schemas"], ref
        for value in node.values():
            _no_dangling_refs(value, doc)
    elif isinstance(node, list):
        for value in node:
            _no_dangling_refs(value, doc)


async def test_docs_is_an_offline_explorer_of_this_description(nursery, tmp_path):
    with trio.fail_after(30):
        handle = await start(nursery, tmp_path, ("hub", "scheduler", "gateway"))
        async with httpx.AsyncClient(base_url=handle.url, timeout=10) as client:
            page = await client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    text = page.text
    assert '"/openapi.json"' in text and "fetch(" in text
    # Nothing is loaded from elsewhere: no CDN, no external script, style or font.
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", text)
    assert "<script src" not in text


@pytest.mark.parametrize("roles", ROLE_SETS, ids=["+".join(r) for r in ROLE_SETS])
def test_the_description_is_valid_openapi_3_0(roles):
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in OPENAPI_30_VALIDATOR.iter_errors(plane_document(roles))]
    assert not errors


def test_two_parts_describing_one_operation_is_an_error():
    op = {"get": {"summary": "x", "responses": {}}}
    with pytest.raises(DescriptionConflict, match="GET /a is described twice"):
        document([Part("one", "", {"/a": op}), Part("two", "", {"/a": op})], title="t", version="1")
    with pytest.raises(DescriptionConflict, match="schema 'S'"):
        document([Part("one", "", {}, {"S": {"type": "string"}}), Part("two", "", {}, {"S": {"type": "integer"}})],
                 title="t", version="1")
