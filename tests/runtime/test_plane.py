"""The control plane as one process serves it: hub + scheduler on one port, nodes joining over HTTP."""

import os
import stat
from functools import partial

import httpx
import pytest
import trio

from runtime.node.agent import AgentConfig, JoinRefused, run_agent
from runtime.plane import PlaneSettings, serve_control_plane
from tests.hub_store.bundles import make_bundle
from tests.polling import wait_until
from tests.runtime.scheduler.test_cluster import FakeExecutor

ADMIN = "plane-admin-key"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
async def plane(nursery, tmp_path):
    settings = PlaneSettings(data_dir=tmp_path / "plane", port=0, lost_after=3, heartbeat_interval=0.2)
    handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))
    async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
        client.handle = handle
        yield client


async def test_publish_join_deploy_status(plane, nursery, tmp_path):
    with trio.fail_after(30):
        bundle = make_bundle(tmp_path, "1.0.0")
        put = await plane.put("/api/services/echo/1.0.0", headers=AUTH, content=bundle.path.read_bytes())
        assert put.status_code in (200, 201), put.text

        handshake = (await plane.get("/api/cluster/handshake")).json()
        assert handshake["kind"] == "flowctl-control-plane" and len(handshake["cluster_id"]) == 16

        created = await plane.post("/api/cluster/tokens", headers=AUTH, json={"name": "desk"})
        assert created.status_code == 201
        token = created.json()["token"]
        listed = (await plane.get("/api/cluster/tokens", headers=AUTH)).json()
        assert [t["name"] for t in listed] == ["desk"] and "token" not in listed[0]

        executor = FakeExecutor("http://127.0.0.1:1", models=("echo-model",))
        config = AgentConfig(url=str(plane.base_url), token=token, node_id="n-desk", name="desk")
        welcome = await nursery.start(run_agent, config, executor)
        assert welcome.hub_url == str(plane.base_url).rstrip("/")

        deployed = await plane.post("/api/deployments", headers=AUTH, json={"service": "echo", "replicas": 1})
        assert deployed.status_code == 201, deployed.text
        assert deployed.json()["version"] == "1.0.0" and deployed.json()["models"] == ["echo-model"]

        async def ready():
            status = (await plane.get("/api/cluster/status", headers=AUTH)).json()
            return status["deployments"][0]["ready"] == 1, status

        ok, status = await ready()
        while not ok:
            await trio.sleep(0.05)
            ok, status = await ready()
        assert status["nodes"][0]["name"] == "desk" and status["nodes"][0]["state"] == "ready"
        assert status["models"] == [{"model": "echo-model", "replicas": 1, "service": "echo"}]
        assert executor.assigns[-1].replicas[0].service_id == "echo"

        scaled = await plane.patch("/api/deployments/echo", headers=AUTH, json={"replicas": 0})
        assert scaled.status_code == 200
        await wait_until(lambda: executor.assigns[-1].replicas == ())
        assert (await plane.delete("/api/deployments/echo", headers=AUTH)).status_code == 204
        assert (await plane.delete("/api/deployments/echo", headers=AUTH)).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "detail"),
    [
        ("GET", "/api/cluster/status", None, 401, "admin key"),
        ("POST", "/api/deployments", {"service": "echo"}, 401, "admin key"),
    ],
)
async def test_admin_routes_need_the_admin_key(plane, method, path, body, status, detail):
    response = await plane.request(method, path, json=body, headers={"Authorization": "Bearer wrong"})
    assert response.status_code == status and detail in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"service": "nope"}, 404, "the hub has no nope@latest"),
        ({"service": "Bad Name"}, 400, "not a valid service id"),
        ({"service": "echo", "version": "1.0"}, 400, "not SemVer"),
        ({"service": "echo", "replicas": "two"}, 400, "not an integer"),
        ({"service": "echo", "replicas": -1}, 400, "between 0 and 1000"),
        ({"replicas": 1}, 400, "'service' is required"),
        ([1, 2], 400, "JSON object"),
    ],
)
async def test_bad_deploy_requests_get_clear_errors(plane, body, status, detail):
    response = await plane.post("/api/deployments", headers=AUTH, json=body)
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]


async def test_not_json_body_is_a_400(plane):
    response = await plane.post("/api/deployments", headers=AUTH, content=b"{nope")
    assert response.status_code == 400


async def test_a_bad_join_token_is_refused_before_the_upgrade(plane):
    config = AgentConfig(url=str(plane.base_url), token="fjt_abc_def", node_id="x", name="x")
    with trio.fail_after(10), pytest.raises(JoinRefused, match="HTTP 401"):
        await run_agent(config, FakeExecutor(None))


async def test_revoked_token_and_unknown_token_name(plane):
    token = (await plane.post("/api/cluster/tokens", headers=AUTH, json={"name": "old"})).json()["token"]
    assert (await plane.delete("/api/cluster/tokens/old", headers=AUTH)).status_code == 204
    assert (await plane.delete("/api/cluster/tokens/old", headers=AUTH)).status_code == 404
    config = AgentConfig(url=str(plane.base_url), token=token, node_id="x", name="x")
    with trio.fail_after(10), pytest.raises(JoinRefused):
        await run_agent(config, FakeExecutor(None))


async def test_the_data_dir_and_its_databases_are_owner_only(nursery, tmp_path):
    data_dir = tmp_path / "plane"
    old_umask = os.umask(0o022)  # the common one, under which plain creation is world-readable
    try:
        data_dir.mkdir(mode=0o755)  # as an older flowctl left it
        settings = PlaneSettings(data_dir=data_dir, port=0, roles=("hub", "scheduler", "gateway"))
        with trio.fail_after(30):
            handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))
            async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
                # One write to each database, so that their -wal and -shm exist too.
                assert (await client.post("/api/cluster/tokens", headers=AUTH, json={"name": "n"})).status_code == 201
                assert (await client.post("/api/gateway/tenants", headers=AUTH, json={"name": "t"})).status_code == 201
                bundle = make_bundle(tmp_path, "1.0.0")
                put = await client.put("/api/services/echo/1.0.0", headers=AUTH, content=bundle.path.read_bytes())
                assert put.status_code == 201, put.text
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in data_dir.iterdir() if p.is_file()}
    for db in ("gateway.db", "cluster.db", "catalog.sqlite3"):
        assert {db, f"{db}-wal", f"{db}-shm"} <= set(files), sorted(files)
    assert {name: m for name, m in files.items() if m & 0o077} == {}
