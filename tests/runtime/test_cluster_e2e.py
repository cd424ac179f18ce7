"""The cluster with real parts in one process: plane, node agent, executor, the echo worker.

Covers what needs everything at once: a rolling upgrade (the new version ready before
the old replica stops) and a control plane restart that nodes survive.
"""

import json
import shutil
import socket
from functools import partial
from pathlib import Path

import httpx
import trio

from packer import pack_dir
from runtime.node.agent import ExecutorSettings, NodeSettings, run_node
from runtime.plane import PlaneSettings, serve_control_plane
from runtime.tunnel.http import send_request

ADMIN = "e2e-admin"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
ECHO = Path(__file__).resolve().parents[2] / "examples" / "echo"


def echo_bundle(tmp_path, version):
    src = tmp_path / f"echo-{version}"
    shutil.copytree(ECHO, src)
    manifest = json.loads((src / "service.json").read_text())
    manifest["version"] = version
    (src / "service.json").write_text(json.dumps(manifest))
    return pack_dir(src, tmp_path / "dist")


async def deployment(client):
    status = (await client.get("/api/cluster/status", headers=AUTH)).json()
    return status["deployments"][0] if status["deployments"] else None


async def wait_for(client, predicate, history=None):
    while True:
        dep = await deployment(client)
        if history is not None and dep is not None:
            history.append(sorted((r["version"], r["state"]) for r in dep["replicas"]))
        if dep is not None and predicate(dep):
            return dep
        await trio.sleep(0.05)


async def deployment_now(handle):
    return handle.scheduler.status()["deployments"][0]


def ready_versions(dep):
    return sorted(r["version"] for r in dep["replicas"] if r["state"] == "ready")


async def test_rolling_upgrade_keeps_a_ready_replica_throughout(tmp_path):
    settings = PlaneSettings(data_dir=tmp_path / "plane", port=0, heartbeat_interval=0.2)
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))
            async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
                for version in ("1.0.0", "1.1.0"):
                    bundle = echo_bundle(tmp_path, version)
                    r = await client.put(f"/api/services/echo/{version}", headers=AUTH,
                                         content=bundle.path.read_bytes())
                    assert r.status_code in (200, 201), r.text
                _, token = handle.scheduler.store.create_token("node")
                node = NodeSettings(url=handle.url, token=token, data_dir=tmp_path / "node", name="node",
                                    executor=ExecutorSettings(grace_s=2))
                await nursery.start(partial(run_node, node))

                r = await client.post("/api/deployments", headers=AUTH,
                                      json={"service": "echo", "version": "1.0.0", "replicas": 1})
                assert r.status_code == 201
                await wait_for(client, lambda d: ready_versions(d) == ["1.0.0"])

                history = []
                r = await client.post("/api/deployments", headers=AUTH,
                                      json={"service": "echo", "version": "1.1.0", "replicas": 1})
                assert r.status_code == 201
                await wait_for(client, lambda d: [x["version"] for x in d["replicas"]] == ["1.1.0"]
                               and ready_versions(d) == ["1.1.0"], history)
                # Surge: the new replica ran beside the ready old one, and there was never a moment
                # without a ready replica (the old one went in the round the new one became ready).
                assert any(("1.0.0", "ready") in s and any(v == "1.1.0" for v, _ in s) for s in history)
                assert all(any(state == "ready" for _, state in snapshot) for snapshot in history)

                (route,) = handle.scheduler.routes("echo")
                reply = await send_request(handle.scheduler.mux_for(route.node_id), "POST",
                                           "/v1/chat/completions", [("content-type", "application/json")],
                                           json.dumps({"model": "echo", "messages": [
                                               {"role": "user", "content": "hello there"}]}).encode(),
                                           route={"replica_id": route.replica.replica_id})
                assert reply.status == 200
                assert json.loads(await reply.read())["choices"][0]["message"]["content"] == "hello there"
            nursery.cancel_scope.cancel()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_nodes_survive_a_control_plane_restart(tmp_path):
    port = free_port()
    settings = PlaneSettings(data_dir=tmp_path / "plane", port=port, heartbeat_interval=0.2)
    bundle = echo_bundle(tmp_path, "1.0.0")
    with trio.fail_after(90):
        async with trio.open_nursery() as outer:
            plane_scope = trio.CancelScope()

            async def plane(task_status=trio.TASK_STATUS_IGNORED):
                with plane_scope:
                    await serve_control_plane(settings, admin_key=ADMIN, task_status=task_status)

            handle = await outer.start(plane)
            async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
                r = await client.put("/api/services/echo/1.0.0", headers=AUTH, content=bundle.path.read_bytes())
                assert r.status_code in (200, 201)
                _, token = handle.scheduler.store.create_token("node")
                node = NodeSettings(url=handle.url, token=token, data_dir=tmp_path / "node", name="node",
                                    executor=ExecutorSettings(grace_s=2))
                await outer.start(partial(run_node, node))
                await client.post("/api/deployments", headers=AUTH, json={"service": "echo"})
                before = await wait_for(client, lambda d: ready_versions(d) == ["1.0.0"])

            plane_scope.cancel()  # the control plane goes away; the node keeps its worker
            plane_scope = trio.CancelScope()
            handle = await outer.start(plane)  # same data dir, same port
            assert (await deployment_now(handle))["replicas"][0]["state"] == "pending"
            async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
                after = await wait_for(client, lambda d: ready_versions(d) == ["1.0.0"])
            assert handle.scheduler.routes("echo"), "the node reconnected and its replica is routable"
            assert after["replicas"][0]["replica_id"] == before["replicas"][0]["replica_id"]
            assert after["replicas"][0]["attempt"] == before["replicas"][0]["attempt"]
            outer.cancel_scope.cancel()
