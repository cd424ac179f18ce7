"""Deployments that follow a hub channel: a newer publish (or a version marked stable) upgrades
them by itself, with a hub in the plane's process (at once) and with a remote hub (polled)."""

from functools import partial

import httpx
import pytest
import trio

from runtime.node.agent import AgentConfig, run_agent
from runtime.plane import PlaneSettings, serve_control_plane
from runtime.scheduler.resolver import hub_channel_resolver, hub_manifest_resolver
from runtime.scheduler.service import DeployError, Scheduler
from runtime.scheduler.store import ClusterStore
from tests.hub_store.bundles import make_bundle
from tests.polling import wait_until
from tests.runtime.scheduler.test_cluster import FakeExecutor, resolve

ADMIN = "track-admin"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


async def publish(client, tmp_path, version, *, stable=None):
    bundle = make_bundle(tmp_path, version, port=None)
    query = "" if stable is None else f"?stable={'true' if stable else 'false'}"
    r = await client.put(f"/api/services/echo/{version}{query}", headers=AUTH, content=bundle.path.read_bytes())
    assert r.status_code in (200, 201), r.text


async def join(nursery, url, client, name="desk"):
    token = (await client.post("/api/cluster/tokens", headers=AUTH, json={"name": name})).json()["token"]
    config = AgentConfig(url=url, token=token, node_id=f"id-{name}", name=name, backoff_initial=0.05)
    await nursery.start(run_agent, config, FakeExecutor("http://127.0.0.1:1", models=("echo-model",)))


def versions(scheduler):
    return sorted({r.version for r in scheduler._replicas})


@pytest.fixture
async def plane(nursery, tmp_path):
    settings = PlaneSettings(data_dir=tmp_path / "plane", port=0, heartbeat_interval=0.2)
    handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))
    async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
        await publish(client, tmp_path, "1.0.0")
        await join(nursery, handle.url, client)
        yield handle, client


async def test_a_publish_to_the_planes_own_hub_upgrades_a_tracking_deployment_at_once(plane, tmp_path):
    handle, client = plane
    scheduler = handle.scheduler
    assert scheduler.tracker.interval == 30  # the poll is only a backstop here: the publish pokes it
    r = await client.post("/api/deployments", headers=AUTH, json={"service": "echo", "track": "stable", "replicas": 2})
    assert r.status_code == 201 and r.json()["track"] == "stable" and r.json()["version"] == "1.0.0", r.text
    with trio.fail_after(10):
        await wait_until(lambda: scheduler.status()["deployments"][0]["ready"] == 2)
        await publish(client, tmp_path, "1.1.0")
        await wait_until(lambda: versions(scheduler) == ["1.1.0"] and scheduler.status()["deployments"][0]["ready"] == 2)
    (dep,) = (await client.get("/api/cluster/status", headers=AUTH)).json()["deployments"]
    assert (dep["version"], dep["track"], dep["desired"], dep["track_error"]) == ("1.1.0", "stable", 2, None)

    # An unstable version is not on the stable channel until it is marked stable.
    with trio.fail_after(10):
        await publish(client, tmp_path, "1.2.0", stable=False)
        await trio.sleep(0.5)
        assert scheduler.deployment("echo").version == "1.1.0"
        r = await client.post("/api/services/echo/1.2.0/stable", headers=AUTH)
        assert r.status_code == 200, r.text
        await wait_until(lambda: versions(scheduler) == ["1.2.0"])

    # Naming a version pins the deployment: a newer publish leaves it where it is.
    r = await client.post("/api/deployments", headers=AUTH, json={"service": "echo", "version": "1.1.0"})
    assert r.status_code == 201 and r.json()["track"] is None
    await publish(client, tmp_path, "1.3.0")
    assert await scheduler.tracker.check_once() == []
    assert scheduler.deployment("echo").version == "1.1.0"


async def test_a_redeploy_keeps_the_channel_and_bad_requests_are_refused(plane):
    handle, client = plane
    r = await client.post("/api/deployments", headers=AUTH, json={"service": "echo", "track": "latest"})
    assert r.status_code == 201 and r.json()["track"] == "latest"
    r = await client.post("/api/deployments", headers=AUTH, json={"service": "echo", "replicas": 0})
    assert r.status_code == 201 and r.json()["track"] == "latest"  # no version named: still following
    r = await client.patch("/api/deployments/echo", headers=AUTH, json={"replicas": 1})
    assert r.json()["track"] == "latest"
    for body, message in [({"service": "echo", "track": "nightly"}, "track 'nightly' must be one of: stable, latest"),
                          ({"service": "echo", "track": "stable", "version": "1.0.0"},
                           "give a version (1.0.0) or a track (stable), not both"),
                          ({"service": "nope", "track": "stable"}, "the hub has no service 'nope'")]:
        r = await client.post("/api/deployments", headers=AUTH, json=body)
        assert r.status_code in (400, 404) and message in r.json()["detail"], r.text
    r = await client.post("/api/deployments", headers=AUTH, json={"service": "echo", "track": ""})
    assert r.status_code == 201 and r.json()["track"] is None


async def test_a_remote_hub_is_polled(nursery, tmp_path):
    hub_settings = PlaneSettings(data_dir=tmp_path / "hub", port=0, roles=("hub",))
    hub = await nursery.start(partial(serve_control_plane, hub_settings, admin_key=ADMIN))
    store = ClusterStore(tmp_path / "cluster.db")
    scheduler = Scheduler(store, hub_manifest_resolver(hub.url), hub_url=hub.url,
                          channel_lookup=hub_channel_resolver(hub.url), track_interval=0.3)
    try:
        async with httpx.AsyncClient(base_url=hub.url, timeout=30) as client, trio.open_nursery() as inner:
            await inner.start(scheduler.run)
            await publish(client, tmp_path, "1.0.0")
            await scheduler.deploy("echo", track="latest", replicas=0)
            with trio.fail_after(10):
                await publish(client, tmp_path, "1.1.0-rc.1")  # a pre-release: on `latest` only
                await wait_until(lambda: scheduler.deployment("echo").version == "1.1.0-rc.1")
                await client.post("/api/services/echo/1.1.0-rc.1/yank", headers=AUTH)
                await trio.sleep(1)  # a yanked version never rolls a deployment back
                assert scheduler.deployment("echo").version == "1.1.0-rc.1"
                await scheduler.deploy("echo", track="stable")
                assert scheduler.deployment("echo").version == "1.0.0"
                await publish(client, tmp_path, "1.1.0")
                await wait_until(lambda: scheduler.deployment("echo").version == "1.1.0")
            inner.cancel_scope.cancel()
    finally:
        store.close()


async def test_an_unreachable_hub_shows_in_status(tmp_path):
    store = ClusterStore(tmp_path / "cluster.db")
    calls = []

    async def lookup(service_id, track):
        calls.append(track)
        if len(calls) == 1:
            return "1.0.0"
        raise DeployError("hub at http://127.0.0.1:1 is unreachable: ConnectError")

    scheduler = Scheduler(store, resolve, hub_url="http://127.0.0.1:1", channel_lookup=lookup)
    try:
        await scheduler.deploy("echo", track="stable", replicas=0)
        assert await scheduler.tracker.check_once() == []
        (dep,) = scheduler.status()["deployments"]
        assert dep["track_error"] == "cannot follow stable: hub at http://127.0.0.1:1 is unreachable: ConnectError"
    finally:
        store.close()
