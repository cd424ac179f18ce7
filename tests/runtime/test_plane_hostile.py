"""Hostile requests against every route family of one control plane (hub, cluster, gateway, admin, sessions).

Each family parses its own credentials and bodies; these check that the answers agree:
two Authorization headers are a 400 everywhere, deeply nested JSON is a one-line 400,
/metrics needs the admin key or the metrics token, and an early refusal on a quart route
tells the client to close when its body never came.
"""

from __future__ import annotations

from functools import partial

import httpx
import pytest
import trio

from runtime.plane import PlaneSettings, serve_control_plane
from tests.runtime.http.rawhttp import open_raw_connection

ADMIN = "hostile-admin-key"
METRICS = "hostile-metrics-token"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
TIMEOUT = 30
NESTED = b"[" * 50_000  # deeper than Python's recursion limit
WS_HEAD = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13"),
           ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]


@pytest.fixture
async def plane(nursery, tmp_path):
    settings = PlaneSettings(data_dir=tmp_path / "plane", port=0)
    handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN, metrics_token=METRICS))
    async with httpx.AsyncClient(base_url=handle.url, timeout=TIMEOUT) as client:
        client.url = handle.url
        yield client


async def tenant_key(plane) -> str:
    assert (await plane.post("/api/gateway/tenants", headers=AUTH, json={"name": "acme"})).status_code == 201
    return (await plane.post("/api/gateway/keys", headers=AUTH, json={"tenant": "acme"})).json()["key"]


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("GET", "/metrics"),  # gateway
    ("GET", "/api/gateway/tenants"),  # gateway admin API
    ("GET", "/api/cluster/status"), ("POST", "/api/deployments"), ("POST", "/api/cluster/tokens"),  # cluster
    ("POST", "/api/admin/gc"), ("PUT", "/api/services/echo/1.0.0"),  # hub
    ("GET", "/v1/sessions"), ("POST", "/v1/sessions"),  # sessions
])
async def test_two_authorization_headers_are_refused_on_every_route_family(plane, method, path):
    key = await tenant_key(plane)
    # The admin key and a tenant key, in both orders: neither "first wins" nor "last wins".
    for pair in ([ADMIN, key], [key, ADMIN]):
        headers = [("Authorization", f"Bearer {token}") for token in pair]
        with trio.fail_after(TIMEOUT):
            r = await plane.request(method, path, headers=headers, content=b"{}")
        assert r.status_code == 400, (path, r.text)
        assert r.json()["detail"] == r.json()["error"]["message"] == \
            "the request has more than one Authorization header: send one"


@pytest.mark.parametrize("path", ["/api/cluster/connect", "/ws/sessions/s1"])
async def test_two_authorization_headers_are_refused_before_a_websocket_upgrade(plane, path):
    with trio.fail_after(TIMEOUT):
        async with open_raw_connection(plane.url) as conn:
            await conn.send_head("GET", path, [*WS_HEAD, ("Authorization", "Bearer a"), ("Authorization", "Bearer b")])
            assert (await conn.response()).status == 400


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/deployments"), ("PATCH", "/api/deployments/echo"), ("POST", "/api/cluster/tokens"),
])
async def test_deeply_nested_json_on_the_cluster_routes_is_a_400(plane, method, path):
    with trio.fail_after(TIMEOUT):
        r = await plane.request(method, path, headers=AUTH, content=NESTED)
    assert r.status_code == 400, r.text
    assert r.json() == {"detail": "the request body is not valid JSON (nested too deeply)"}


async def test_metrics_need_the_admin_key_or_the_metrics_token(plane):
    key = await tenant_key(plane)
    with trio.fail_after(TIMEOUT):
        for headers in ({}, {"Authorization": f"Bearer {key}"}, {"Authorization": "Bearer nope"},
                        {"Authorization": f"Basic {ADMIN}"}):
            r = await plane.get("/metrics", headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", headers
            assert r.json()["error"]["code"] == "invalid_metrics_key"
            assert "acme" not in r.text
        for token in (ADMIN, METRICS):
            r = await plane.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200 and "flowctl_gateway_retries_total" in r.text
        # The metrics token reads nothing else.
        assert (await plane.get("/api/gateway/tenants", headers={"Authorization": f"Bearer {METRICS}"})
                ).status_code == 401
        assert (await plane.get("/api/cluster/status", headers={"Authorization": f"Bearer {METRICS}"})
                ).status_code == 401


@pytest.mark.parametrize("path", ["/api/deployments", "/api/admin/gc"])
async def test_an_early_401_on_a_quart_route_closes_when_the_body_never_comes(plane, path):
    with trio.fail_after(TIMEOUT):
        async with open_raw_connection(plane.url) as conn:
            r = await conn.request("POST", path, [("Authorization", "Bearer wrong")], b'{"service": "echo"}')
            assert r.status == 401 and r.header("connection") is None  # a whole body: kept
            await conn.send_head("POST", path, [("Authorization", "Bearer wrong"), ("Content-Length", "100")])
            await conn.send(b'{"serv')
            r = await conn.response()
            assert r.status == 401 and r.header("connection") == "close"
            assert await conn.closed_by_server()


async def test_without_a_hub_the_cluster_routes_keep_the_hub_apps_limits_and_json_errors(nursery, tmp_path):
    settings = PlaneSettings(data_dir=tmp_path / "plane", port=0, roles=("scheduler", "gateway"))
    handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))
    async with httpx.AsyncClient(base_url=handle.url, timeout=TIMEOUT) as client:
        with trio.fail_after(TIMEOUT):
            big = await client.post("/api/deployments", headers=AUTH, content=b" " * (2 << 20))
            nested = await client.post("/api/cluster/tokens", headers=AUTH, content=NESTED)
    assert big.status_code == 413 and big.headers["content-type"] == "application/json"
    assert big.json()["detail"]
    assert nested.status_code == 400
    assert nested.json() == {"detail": "the request body is not valid JSON (nested too deeply)"}
