"""A control plane with hub + scheduler + gateway in-process, agents with FakeExecutors, the real echo worker."""

from __future__ import annotations

from functools import partial

import httpx
import pytest
import trio

from runtime.node.agent import AgentConfig, run_agent
from runtime.plane import PlaneSettings, serve_control_plane
from tests.examples.workers import EXAMPLES, spawn_worker
from tests.hub_store.bundles import make_bundle
from tests.polling import wait_until
from tests.runtime.scheduler.test_cluster import FakeExecutor

ADMIN = "gateway-admin-key"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
ECHO_MODELS = [{"model_id": "echo", "model_type": "chat", "version": "1.0.0", "path": "worker.py"}]


class Cluster:
    """What a gateway test gets: an HTTP client on the plane, the worker, helpers."""

    def __init__(self, client, handle, worker_url, nursery):
        self.client = client
        self.handle = handle
        self.url = handle.url
        self.worker_url = worker_url
        self.nursery = nursery
        self._nodes = 0

    async def add_node(self, worker_url, models=("echo",)):
        token = (await self.client.post("/api/cluster/tokens", headers=ADMIN_AUTH,
                                        json={"name": f"n{self._nodes}"})).json()["token"]
        self._nodes += 1
        config = AgentConfig(url=self.url, token=token, node_id=f"node-{self._nodes}", name=f"n{self._nodes}",
                             backoff_initial=0.05)
        executor = FakeExecutor(worker_url, models=models)
        await self.nursery.start(run_agent, config, executor)
        return executor

    async def deploy(self, replicas=1):
        r = await self.client.post("/api/deployments", headers=ADMIN_AUTH, json={"service": "echo", "replicas": replicas})
        assert r.status_code == 201, r.text
        with trio.fail_after(10):
            await wait_until(lambda: len(self.handle.scheduler.routes("echo")) == replicas)

    async def key(self, tenant="acme", **options):
        r = await self.client.post("/api/gateway/tenants", headers=ADMIN_AUTH, json={"name": tenant})
        assert r.status_code in (201, 409), r.text
        r = await self.client.post("/api/gateway/keys", headers=ADMIN_AUTH, json={"tenant": tenant, **options})
        assert r.status_code == 201, r.text
        return r.json()["key"]


async def _start_cluster(nursery, tmp_path, env=None, gateway_settings=None, nodes=1, node_models=("echo",),
                         session_settings=None):
    worker = await trio.to_thread.run_sync(partial(spawn_worker, EXAMPLES / "echo", env=env))
    try:
        bundle = make_bundle(tmp_path, "1.0.0", models=ECHO_MODELS)
        settings = PlaneSettings(data_dir=tmp_path / "plane", port=0, roles=("hub", "scheduler", "gateway"),
                                 lost_after=3, heartbeat_interval=0.2,
                                 extra={"gateway": gateway_settings or {}, "sessions": session_settings or {}})
        handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))
        client = httpx.AsyncClient(base_url=handle.url, timeout=30)
        put = await client.put("/api/services/echo/1.0.0", headers=ADMIN_AUTH, content=bundle.path.read_bytes())
        assert put.status_code in (200, 201), put.text
        cluster = Cluster(client, handle, worker.url, nursery)
        for _ in range(nodes):
            await cluster.add_node(worker.url, models=node_models)
        return cluster, worker
    except BaseException:
        await trio.to_thread.run_sync(worker.stop)
        raise


@pytest.fixture
async def cluster(nursery, tmp_path, request):
    options = getattr(request, "param", {}) or {}
    c, worker = await _start_cluster(nursery, tmp_path, **options)
    try:
        await c.deploy()
        yield c
    finally:
        with trio.CancelScope(shield=True):
            await c.client.aclose()
            await trio.to_thread.run_sync(worker.stop)
