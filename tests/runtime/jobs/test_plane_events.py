"""The plane's deployment events reach event-triggered jobs: a deployment that becomes ready,
and one whose replica fails (a real plane, a real node agent with a stand-in executor)."""

from functools import partial

import httpx
import pytest
import trio

from runtime.control.messages import ReplicaReport
from runtime.node.agent import AgentConfig, run_agent
from runtime.plane import PlaneSettings, serve_control_plane
from tests.hub_store.bundles import make_bundle
from tests.runtime.scheduler.test_cluster import FakeExecutor

ADMIN = "jobs-events-admin"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


class FailingExecutor(FakeExecutor):
    """Replicas of `broken` fail; the others are ready."""

    def apply(self, assign, hub_url, report):
        super().apply(assign, hub_url, lambda rep: report(
            ReplicaReport(rep.replica_id, rep.service_id, rep.version, rep.attempt, "failed", detail="boom")
            if rep.service_id == "broken" else rep))


def on(event, service):
    return {"name": f"on-{event.replace('_', '-')}-{service}",
            "trigger": {"type": "event", "event": event, "service": service},
            "steps": [{"name": "main", "service": "echo@stable", "command": ["true"]}]}


@pytest.fixture
async def plane(nursery, tmp_path):
    settings = PlaneSettings(data_dir=tmp_path / "plane", port=0, roles=("hub", "scheduler", "jobs"),
                             heartbeat_interval=0.2)
    with trio.fail_after(30):
        handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))
    async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
        yield client


async def runs_of(client, job):
    return (await client.get(f"/api/v1/runs?job={job}", headers=AUTH)).json()["runs"]


async def test_deployment_ready_and_failed_fire_their_jobs(plane, nursery, tmp_path):
    with trio.fail_after(40):
        for job in (on("deployment_ready", "echo"), on("deployment_failed", "broken"),
                    on("deployment_ready", "broken")):
            assert (await plane.post("/api/v1/jobs", headers=AUTH, json=job)).status_code == 201
        for service in ("echo", "broken"):
            bundle = make_bundle(tmp_path / service, "1.0.0", service_id=service, files={"main.py": b"pass\n"},
                                 port=None)
            put = await plane.put(f"/api/services/{service}/1.0.0", headers=AUTH, content=bundle.path.read_bytes())
            assert put.status_code == 201, put.text
        token = (await plane.post("/api/cluster/tokens", headers=AUTH, json={"name": "n"})).json()["token"]
        executor = FailingExecutor("http://127.0.0.1:1")
        await nursery.start(run_agent, AgentConfig(url=str(plane.base_url), token=token, node_id="n1", name="n1"),
                            executor)
        for service in ("echo", "broken"):
            r = await plane.post("/api/deployments", headers=AUTH, json={"service": service, "replicas": 1})
            assert r.status_code == 201, r.text
        while True:
            ready = await runs_of(plane, "on-deployment-ready-echo")
            failed = await runs_of(plane, "on-deployment-failed-broken")
            if ready and failed:
                break
            await trio.sleep(0.1)
    assert ready[0]["cause"] == "event:deployment_ready" and len(ready) == 1
    assert failed[0]["cause"] == "event:deployment_failed"
    assert await runs_of(plane, "on-deployment-ready-broken") == []
