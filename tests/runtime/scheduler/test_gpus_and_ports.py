"""GPUs per worker and declared ports with real parts: a plane, a node that declares simulated
GPUs (FLOWCTL_NODE_GPUS), the real executor, and workers that say what they were given."""

import io
import json
import socket
from functools import partial

import httpx
import pytest
import trio
from rich.console import Console

from flowctl.commands import status_view
from packer import pack_dir
from runtime.node.agent import ExecutorSettings, NodeSettings, run_node
from runtime.plane import PlaneSettings, serve_control_plane
from runtime.tunnel.http import send_request
from tests.polling import wait_until

ADMIN = "gpu-admin"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
# A seed-style service: it listens where it was told to at packing time (PORT), or on FLOWCTL_PORT.
WORKER = """
import http.server, json, os
PORT = {port}
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        names = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "FLOWCTL_PORT")
        body = json.dumps({{n: os.environ.get(n) for n in names}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", PORT or int(os.environ["FLOWCTL_PORT"])), Handler).serve_forever()
"""


def bundle(tmp_path, service_id, *, port=None, resources=None, version="1.0.0"):
    src = tmp_path / f"src-{service_id}-{version}"
    src.mkdir()
    (src / "worker.py").write_text(WORKER.format(port=port or 0))
    manifest = {"service_id": service_id, "version": version, "startup_command": "python worker.py",
                "health_check": {"endpoint": "/health", "timeout_s": 20}, "resources": resources or {}}
    if port is not None:
        manifest["port"] = port
    (src / "service.json").write_text(json.dumps(manifest))
    return pack_dir(src, tmp_path / "dist")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, handle, client, tmp_path):
        self.handle = handle
        self.client = client
        self.tmp_path = tmp_path

    async def publish_and_deploy(self, service_id, replicas=1, version="1.0.0", **kwargs):
        b = bundle(self.tmp_path, service_id, version=version, **kwargs)
        r = await self.client.put(f"/api/services/{service_id}/{version}", headers=AUTH, content=b.path.read_bytes())
        assert r.status_code in (200, 201), r.text
        r = await self.client.post("/api/deployments", headers=AUTH,
                                   json={"service": service_id, "replicas": replicas, "version": version})
        assert r.status_code == 201, r.text

    async def status(self, service_id):
        data = (await self.client.get("/api/cluster/status", headers=AUTH)).json()
        return data, next(d for d in data["deployments"] if d["service"] == service_id)

    async def env_of(self, replica):
        mux = self.handle.scheduler.mux_for(replica["node_id"])
        reply = await send_request(mux, "GET", "/env", [], b"", route={"replica_id": replica["replica_id"]})
        assert reply.status == 200
        return json.loads(await reply.read())


@pytest.fixture
async def cluster(nursery, tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWCTL_NODE_GPUS", "sim-a:8000,sim-b:8000")  # read by the node at its hello
    settings = PlaneSettings(data_dir=tmp_path / "plane", port=0, heartbeat_interval=0.2)
    handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))
    async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
        token = (await client.post("/api/cluster/tokens", headers=AUTH, json={"name": "box"})).json()["token"]
        node = NodeSettings(url=handle.url, token=token, data_dir=tmp_path / "node", name="box",
                            executor=ExecutorSettings(grace_s=2))
        await nursery.start(partial(run_node, node))
        yield Cluster(handle, client, tmp_path)


async def test_each_worker_sees_only_the_gpus_it_was_given(cluster, monkeypatch):
    with trio.fail_after(60):
        await cluster.publish_and_deploy("vision", replicas=3,
                                         resources={"ram_mb": 10, "vram_mb": 6000, "gpu": "required"})
        await cluster.publish_and_deploy("plain")
        await wait_until(lambda: [d["ready"] for d in cluster.handle.scheduler.status()["deployments"]] == [1, 2])
        data, dep = await cluster.status("vision")
        assert [g["index"] for g in data["nodes"][0]["gpus"]] == [0, 1]
        assert sorted(r["gpus"] for r in dep["replicas"]) == [[0], [1]]
        assert "box has 2000 MB VRAM free, needs 6000" in dep["unplaced"]  # no third 6000 MB share
        for replica in dep["replicas"]:
            env = await cluster.env_of(replica)
            assert env["CUDA_VISIBLE_DEVICES"] == str(replica["gpus"][0])
            assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
        _, plain = await cluster.status("plain")
        assert plain["replicas"][0]["gpus"] == []
        assert (await cluster.env_of(plain["replicas"][0]))["CUDA_VISIBLE_DEVICES"] == ""  # no GPU visible
    buffer = io.StringIO()
    monkeypatch.setattr(status_view, "out", Console(file=buffer, width=250, highlight=False))
    status_view.render_status(data)
    shown = buffer.getvalue()
    assert "0: sim-a (8000 MB)" in shown and "gpu 0" in shown and "gpu 1" in shown


async def test_a_declared_port_is_where_the_worker_listens_one_per_node(cluster):
    port = free_port()
    with trio.fail_after(60):
        await cluster.publish_and_deploy("nmt", replicas=2, port=port)
        await wait_until(lambda: cluster.handle.scheduler.status()["deployments"][0]["ready"] == 1)
        _, dep = await cluster.status("nmt")
        assert dep["port"] == port and len(dep["replicas"]) == 1
        assert f"box has port {port} taken by nmt r1" in dep["unplaced"]
        assert (await cluster.env_of(dep["replicas"][0]))["FLOWCTL_PORT"] == str(port)


async def test_a_declared_port_busy_on_the_node_is_reported_and_the_node_avoided(cluster):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with trio.fail_after(60):
            await cluster.publish_and_deploy("nmt", port=port)
            scheduler = cluster.handle.scheduler
            await wait_until(lambda: f"box has port {port} in use by another process"
                             in (scheduler.status()["deployments"][0]["unplaced"] or ""))
            _, dep = await cluster.status("nmt")
            (replica,) = dep["replicas"]
            assert replica["state"] == "failed"
            assert f"port {port} (the service's declared port) is in use on this node" in replica["detail"]
            assert dep["ready"] == 0


async def test_a_port_service_on_its_only_node_upgrades_in_place(cluster):
    port = free_port()
    scheduler = cluster.handle.scheduler

    def running():
        (dep,) = scheduler.status()["deployments"]
        return [(r["version"], r["state"]) for r in dep["replicas"]]

    with trio.fail_after(60):
        await cluster.publish_and_deploy("nmt", port=port)
        await wait_until(lambda: running() == [("1.0.0", "ready")])
        await cluster.publish_and_deploy("nmt", port=port, version="1.1.0")
        await wait_until(lambda: running() == [("1.1.0", "ready")])  # the old worker let go of the port
        _, dep = await cluster.status("nmt")
        assert (await cluster.env_of(dep["replicas"][0]))["FLOWCTL_PORT"] == str(port)
