"""A real plane (hub, scheduler, gateway, jobs) on a fixed loopback port that a test can stop and
start again on the same data dir, one node agent, and the real echo worker deployed as `echo`."""

from __future__ import annotations

import socket
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from runtime.node.agent import AgentConfig, run_agent
from runtime.plane import PlaneSettings, serve_control_plane
from tests.examples.workers import EXAMPLES, spawn_worker
from tests.hub_store.bundles import make_bundle
from tests.polling import wait_until
from tests.runtime.gateway.conftest import ADMIN, ADMIN_AUTH, ECHO_MODELS
from tests.runtime.scheduler.test_cluster import FakeExecutor


def free_port() -> int:
    """A loopback port free right now (the plane binds it again after a restart)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BatchCluster:
    """The plane (restartable), its HTTP client, and keys per tenant."""

    def __init__(self, nursery: trio.Nursery, data: Path, extra: dict[str, Any]):
        self.nursery, self.data, self.extra = nursery, data, extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.AsyncClient(base_url=self.url, timeout=30)
        self.handle: Any = None
        self._scope: trio.CancelScope | None = None
        self._stopped = trio.Event()

    async def start(self) -> None:
        """Serve the plane (again) on the same port and data dir."""
        settings = PlaneSettings(data_dir=self.data / "plane", port=self.port, host="127.0.0.1",
                                 roles=("hub", "scheduler", "gateway", "jobs"), lost_after=3,
                                 heartbeat_interval=0.2, extra=self.extra)
        self._stopped = trio.Event()
        with trio.fail_after(30):
            self.handle = await self.nursery.start(self._serve, settings)

    async def _serve(self, settings: PlaneSettings, *, task_status: Any) -> None:
        try:
            with trio.CancelScope() as self._scope:
                await serve_control_plane(settings, admin_key=ADMIN, task_status=task_status)
        finally:
            self._stopped.set()

    async def stop(self) -> None:
        """Stop the plane as a crash would leave its runs: in flight, in the store."""
        assert self._scope is not None
        self._scope.cancel()
        with trio.fail_after(20):
            await self._stopped.wait()

    async def key(self, tenant: str = "acme", **limits: Any) -> str:
        """A new API key of `tenant` (created, with `limits`, if missing)."""
        r = await self.client.post("/api/gateway/tenants", headers=ADMIN_AUTH, json={"name": tenant, **limits})
        assert r.status_code in (201, 409), r.text
        r = await self.client.post("/api/gateway/keys", headers=ADMIN_AUTH, json={"tenant": tenant})
        assert r.status_code == 201, r.text
        return str(r.json()["key"])

    async def ready(self, model: str = "echo") -> None:
        """Wait until `model` has a ready replica (after a start or restart)."""
        with trio.fail_after(20):
            await wait_until(lambda: bool(self.handle.scheduler.routes(model)), interval=0.05)


async def start_batch_cluster(nursery: trio.Nursery, tmp_path: Path, extra: dict[str, Any] | None = None, *,
                              worker: Any = None, service: str = "echo", models: list[dict] | None = None
                              ) -> tuple[BatchCluster, Any]:
    """The plane with `service` (the real echo worker, unless `worker` is one already running)
    deployed on one node; returns it and the worker (the caller stops it)."""
    models = models or ECHO_MODELS
    if worker is None:
        worker = await trio.to_thread.run_sync(partial(spawn_worker, EXAMPLES / "echo"))
    try:
        cluster = BatchCluster(nursery, tmp_path, extra or {})
        await cluster.start()
        client = cluster.client
        bundle = make_bundle(tmp_path, "1.0.0", service_id=service, models=models)
        put = await client.put(f"/api/services/{service}/1.0.0", headers=ADMIN_AUTH,
                               content=bundle.path.read_bytes())
        assert put.status_code in (200, 201), put.text
        token = (await client.post("/api/cluster/tokens", headers=ADMIN_AUTH, json={"name": "n1"})).json()["token"]
        config = AgentConfig(url=cluster.url, token=token, node_id="node-1", name="n1", backoff_initial=0.05,
                             backoff_max=0.5)
        await nursery.start(run_agent, config, FakeExecutor(worker.url, models=tuple(m["model_id"] for m in models)))
        r = await client.post("/api/deployments", headers=ADMIN_AUTH, json={"service": service, "replicas": 1})
        assert r.status_code == 201, r.text
        await cluster.ready(models[0]["model_id"])
        return cluster, worker
    except BaseException:
        await trio.to_thread.run_sync(worker.stop)
        raise
