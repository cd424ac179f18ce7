"""Several planes on one state (one SQLite data dir here), in one process: one leader, nodes on every plane.

Real planes, a real node agent attached to both, the echo worker; the planes share the data dir as
planes on one host would (docs/scale-out.md). The kill/stop cases with real processes and
PostgreSQL are in tests/scale/.
"""

import json
import os
from functools import partial

import httpx
import pytest
import trio
import trio_websocket

from runtime.control.messages import Assign
from runtime.node.agent import ExecutorSettings, NodeSettings, run_node
from runtime.node.agent.planes import PlaneLinks
from runtime.plane import PlaneSettings, serve_control_plane
from tests.polling import wait_until
from tests.runtime.test_cluster_e2e import echo_bundle

ADMIN = "lead-admin"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
TTL = 1.5


def plane_settings(tmp_path, name):
    return PlaneSettings(data_dir=tmp_path / "state", port=0, heartbeat_interval=0.2, lost_after=3,
                         extra={"leader": {"name": name, "ttl_s": TTL, "refresh_s": 0.1},
                                "gateway": {"anonymous_tenant": "default"}})


def leading(handle):
    return handle.scheduler.leadership.valid()


def worker_pids(node_dir):
    """The pids of the echo workers running under `node_dir` (from /proc)."""
    found = []
    for proc in os.listdir("/proc"):
        if proc.isdigit():
            try:
                cmd = open(f"/proc/{proc}/cmdline", "rb").read().split(b"\0")
                cwd = os.readlink(f"/proc/{proc}/cwd")
            except OSError:
                continue
            if b"worker.py" in cmd and cwd.startswith(str(node_dir)):
                found.append(int(proc))
    return sorted(found)


def ready(handle):
    deps = handle.scheduler.status()["deployments"]
    return bool(deps) and deps[0]["ready"] == deps[0]["desired"] == 1


async def chat(url):
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        r = await client.post("/v1/chat/completions", json={"model": "echo", "messages": [
            {"role": "user", "content": "hi"}]})
        return r.status_code, r.text


def test_a_node_refuses_an_assign_older_than_the_newest_epoch_it_saw():
    fence = PlaneLinks()
    assert fence.admit(Assign(1, epoch=3).epoch, "http://a")
    assert fence.admit(4, "http://b") and fence.admit(4, "http://b")
    assert not fence.admit(3, "http://a")
    assert fence.highest == 4


async def test_two_planes_one_leader_deploy_through_one_request_through_either(tmp_path):
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            a, stop_a = await start_plane(nursery, plane_settings(tmp_path, "a"))
            await wait_until(lambda: leading(a))
            b, _ = await start_plane(nursery, plane_settings(tmp_path, "b"))
            async with httpx.AsyncClient(base_url=b.url, timeout=30) as client:
                bundle = echo_bundle(tmp_path, "1.0.0")
                r = await client.put("/api/services/echo/1.0.0", headers=AUTH, content=bundle.path.read_bytes())
                assert r.status_code in (200, 201), r.text
                _, token = a.scheduler.store.create_token("node")
                node = NodeSettings(url=f"{a.url},{b.url}", token=token, data_dir=tmp_path / "node", name="n1",
                                    executor=ExecutorSettings(grace_s=2))
                await nursery.start(partial(run_node, node))
                # Deployed through the follower: the leader reads it from the shared state and places it.
                r = await client.post("/api/deployments", headers=AUTH, json={"service": "echo", "replicas": 1})
                assert r.status_code == 201, r.text
                await wait_until(lambda: ready(a) and ready(b))
                assert not leading(b)
                for plane in (a, b):
                    status, body = await chat(plane.url)
                    assert status == 200, body
                health = (await client.get("/health")).json()["roles"]["scheduler"]
                assert health["plane"] == "b" and health["leader"] is False and health["epoch"] == 0
                pids = worker_pids(tmp_path / "node")
                assert len(pids) == 1

                # The leader goes: the follower takes over within the lease, nothing is restarted.
                epoch = a.scheduler.leadership.epoch
                gone = trio.current_time()
                stop_a.cancel()
                await wait_until(lambda: leading(b))
                assert trio.current_time() - gone < TTL + 2
                assert b.scheduler.leadership.epoch > epoch
                await wait_until(lambda: ready(b))
                status, body = await chat(b.url)
                assert status == 200, body
                assert worker_pids(tmp_path / "node") == pids
                nursery.cancel_scope.cancel()


async def start_plane(nursery, settings):
    """A plane in `nursery`, and the cancel scope that stops it alone."""
    scope = trio.CancelScope()

    async def run(task_status=trio.TASK_STATUS_IGNORED):
        with scope:
            await serve_control_plane(settings, admin_key=ADMIN, task_status=task_status)

    return await nursery.start(run), scope


async def say(url, session_id, token, text):
    """One turn on the session's WebSocket at plane `url`; the reply's text."""
    host, port = url.removeprefix("http://").split(":")
    async with trio_websocket.open_websocket(host, int(port), f"/ws/sessions/{session_id}?token={token}",
                                             use_ssl=False) as ws:
        await ws.send_message(json.dumps({"type": "text", "content": text}))
        while (message := json.loads(await ws.get_message()))["type"] == "text_delta":
            pass
    assert message["type"] == "text" and message["done"], message
    return message["content"]


async def test_a_session_begun_on_one_plane_continues_on_another_with_its_history(tmp_path):
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            a, stop_a = await start_plane(nursery, plane_settings(tmp_path, "a"))
            await wait_until(lambda: leading(a))
            b, _ = await start_plane(nursery, plane_settings(tmp_path, "b"))
            async with httpx.AsyncClient(timeout=30) as client:
                bundle = echo_bundle(tmp_path, "1.0.0")
                r = await client.put(f"{a.url}/api/services/echo/1.0.0", headers=AUTH, content=bundle.path.read_bytes())
                assert r.status_code in (200, 201), r.text
                _, token = a.scheduler.store.create_token("node")
                node = NodeSettings(url=f"{a.url},{b.url}", token=token, data_dir=tmp_path / "node", name="n1",
                                    executor=ExecutorSettings(grace_s=2))
                await nursery.start(partial(run_node, node))
                r = await client.post(f"{a.url}/api/deployments", headers=AUTH, json={"service": "echo"})
                assert r.status_code == 201, r.text
                await wait_until(lambda: ready(a) and ready(b))

                r = await client.post(f"{a.url}/v1/sessions", json={"model": "echo", "system_prompt": "be brief"})
                assert r.status_code == 201, r.text
                sid, secret = r.json()["session_id"], r.json()["engine_token"]
                assert await say(a.url, sid, secret, "first question") == "first question"
                after_one = (await client.get(f"{a.url}/v1/sessions/{sid}")).json()["history_tokens"]

                stop_a.cancel()  # the plane the session began on goes away
                seen = (await client.get(f"{b.url}/v1/sessions/{sid}")).json()
                assert seen["history_tokens"] == after_one and seen["model"] == "echo"
                # A wrong token resumes nothing, and says no more than for an unknown session.
                with pytest.raises(trio_websocket.ConnectionRejected) as refused:
                    await say(b.url, sid, "not-the-token", "x")
                assert refused.value.status_code == 403
                assert await say(b.url, sid, secret, "second question") == "second question"
                after_two = (await client.get(f"{b.url}/v1/sessions/{sid}")).json()["history_tokens"]
                assert after_two > after_one  # the turns of plane a, then b's

                r = await client.delete(f"{b.url}/v1/sessions/{sid}")
                assert r.status_code == 204
                assert (await client.get(f"{b.url}/v1/sessions/{sid}")).status_code == 404
                nursery.cancel_scope.cancel()
