"""Issue 18 §2 with real processes: three planes on one state, a fenced leader, nodes on every plane.

The planes are `flowctl serve` processes sharing one state (tests/scale/planes.py), so the
signals are real: SIGKILL a leader, SIGSTOP it past its lease and SIGCONT it, SIGKILL the plane a
node is attached to. The echo worker stands in for a model (these tests are about routing); "no
reschedule" is checked on the worker processes themselves (same pids) and on each replica's
(id, node, attempt).
"""

from __future__ import annotations

import json
import signal

import httpx
import pytest
import trio
import trio_websocket

from tests.scale.planes import (
    LOST_AFTER,
    TTL,
    api,
    chat,
    cluster,
    deployment,
    health,
    join_token,
    placements,
    publish_echo,
    until_ready,
    wait_until,
    worker_pids,
)

pytestmark = pytest.mark.engines


@pytest.fixture
def state(postgres_url):
    """Three planes against one PostgreSQL (blobs stay in the data dir the planes share on this host)."""
    return postgres_url


async def three_planes(c, tmp_path, *, node_planes=("a", "b", "c"), replicas=1):
    """Planes a (the first leader), b, c; node n1 on `node_planes`; echo deployed and ready everywhere."""
    a = await c.plane("a")
    assert await c.leader() == "a"
    await c.plane("b")
    await c.plane("c")
    await publish_echo(a, tmp_path)
    await c.node("n1", list(node_planes), await join_token(a))
    r = await api(a, "POST", "/api/deployments", json={"service": "echo", "replicas": replicas})
    assert r.status_code == 201, r.text
    for name in node_planes:
        await until_ready(c.planes[name], replicas)


@pytest.mark.parametrize("engine", ["postgresql", "sqlite"])
async def test_deploy_through_a_request_through_c_reaches_a_node_attached_to_b(tmp_path, request, engine):
    """The node is attached to b and c only: c routes over its own link, a (leading) cannot place it."""
    with trio.fail_after(120):
        state = request.getfixturevalue("postgres_url") if engine == "postgresql" else None
        async with cluster(tmp_path, state) as c:
            await c.plane("b")
            assert await c.leader() == "b"  # the leader must see the node to place a replica on it
            a = await c.plane("a")
            pc = await c.plane("c")
            await publish_echo(a, tmp_path)
            await c.node("n1", ["b", "c"], await join_token(a))
            r = await api(a, "POST", "/api/deployments", json={"service": "echo", "replicas": 1})
            assert r.status_code == 201, r.text
            await until_ready(pc, 1)
            status, body = await chat(pc, "through c")
            assert status == 200, body
            assert "through c" in body
            # a has no link to the node: it knows the deployment but has no ready replica to route to.
            dep = await deployment(a)
            assert dep is not None and dep["ready"] == 0
            status, body = await chat(a)
            assert status == 503, body


async def test_sigkill_the_leader_another_leads_within_ttl_and_nothing_moves(tmp_path, state):
    with trio.fail_after(150):
        async with cluster(tmp_path, state) as c:
            await three_planes(c, tmp_path, replicas=2)
            node_dir = tmp_path / "node-n1"
            pids = worker_pids(node_dir)
            before = placements(await deployment(c.planes["b"]))
            assert len(pids) == 2 and len(before) == 2

            killed = trio.current_time()
            c.planes["a"].process.send_signal(signal.SIGKILL)
            await c.planes["a"].process.wait()
            new = await c.leader()
            took = trio.current_time() - killed
            assert new in ("b", "c") and took < TTL + 2, took

            survivor = c.planes[new]
            dep = await until_ready(survivor, 2)
            assert placements(dep) == before  # no assignment lost, duplicated or moved
            assert worker_pids(node_dir) == pids
            for name in ("b", "c"):
                status, body = await chat(c.planes[name])
                assert status == 200, body
            # The new leader places new work: scale up through the other follower.
            other = "c" if new == "b" else "b"
            r = await api(c.planes[other], "POST", "/api/deployments", json={"service": "echo", "replicas": 3})
            assert r.status_code == 201, r.text
            dep = await until_ready(survivor, 3)
            assert sorted(r["replica_id"] for r in dep["replicas"]) == ["r1", "r2", "r3"]
            await wait_until(lambda: len(worker_pids(node_dir)) == 3)
            assert set(pids) <= set(worker_pids(node_dir))


async def test_sigstop_the_leader_past_its_lease_then_sigcont_it_is_fenced_off(tmp_path, state):
    with trio.fail_after(150):
        async with cluster(tmp_path, state) as c:
            await three_planes(c, tmp_path, replicas=1)
            node_dir = tmp_path / "node-n1"
            a = c.planes["a"]
            a.process.send_signal(signal.SIGSTOP)
            new = await c.leader()
            assert new in ("b", "c")
            epoch = (await health(c.planes[new]))["roles"]["scheduler"]["epoch"]
            # While a sleeps, the new leader changes the desired state: 2 replicas.
            r = await api(c.planes[new], "POST", "/api/deployments", json={"service": "echo", "replicas": 2})
            assert r.status_code == 201, r.text
            await until_ready(c.planes[new], 2)
            pids = worker_pids(node_dir)
            assert len(pids) == 2

            a.process.send_signal(signal.SIGCONT)
            # a wakes believing it leads with 1 replica: it must step down, and its old view must not win.
            await wait_until_async(lambda: _not_leading(a))
            assert await c.leader() == new
            assert (await health(c.planes[new]))["roles"]["scheduler"]["epoch"] == epoch
            await until_ready(a, 2)  # a follows the shared state now
            assert worker_pids(node_dir) == pids
            status, body = await chat(a)
            assert status == 200, body


async def test_sigkill_a_nodes_plane_the_node_keeps_serving_through_the_others(tmp_path, state):
    with trio.fail_after(150):
        async with cluster(tmp_path, state) as c:
            await three_planes(c, tmp_path, replicas=1)
            node_dir = tmp_path / "node-n1"
            pids = worker_pids(node_dir)
            before = placements(await deployment(c.planes["a"]))
            c.planes["b"].process.send_signal(signal.SIGKILL)  # a follower the node is attached to
            await c.planes["b"].process.wait()
            # Until past the lost-node timeout, every request through a and c is served and nothing is
            # rescheduled: same replica, node, attempt and worker process throughout.
            end = trio.current_time() + LOST_AFTER + 1
            while trio.current_time() < end:
                for name in ("a", "c"):
                    status, body = await chat(c.planes[name])
                    assert status == 200, body
                dep = await deployment(c.planes["a"])
                assert dep is not None and placements(dep) == before and dep["ready"] == 1
                assert worker_pids(node_dir) == pids
            assert c.nodes["n1"].alive()


async def _not_leading(proc) -> bool:
    h = await health(proc)
    return h is not None and not h["roles"]["scheduler"]["leader"]


async def wait_until_async(predicate, interval=0.05):
    while not await predicate():  # noqa: ASYNC110 - the state lives in other processes
        await trio.sleep(interval)


async def test_a_session_continues_on_another_plane_with_its_history(tmp_path, state):
    with trio.fail_after(150):
        async with cluster(tmp_path, state) as c:
            await three_planes(c, tmp_path, replicas=1)
            a, b = c.planes["a"], c.planes["b"]
            async with httpx.AsyncClient(timeout=15) as client:  # as the anonymous tenant's caller
                r = await client.post(f"{a.url}/v1/sessions", json={"model": "echo", "system_prompt": "be brief"})
                assert r.status_code == 201, r.text
                sid, secret = r.json()["session_id"], r.json()["engine_token"]
                assert await say(a, sid, secret, "first question") == "first question"
                after_one = (await client.get(f"{a.url}/v1/sessions/{sid}")).json()["history_tokens"]
                a.process.send_signal(signal.SIGKILL)  # the plane the session began on dies
                await a.process.wait()
                assert await say(b, sid, secret, "second question") == "second question"
                seen = (await client.get(f"{b.url}/v1/sessions/{sid}")).json()
                assert seen["history_tokens"] > after_one and seen["model"] == "echo"


async def test_postgresql_restarted_under_load_no_500_persists(tmp_path, postgres_server, state):
    with trio.fail_after(200):
        async with cluster(tmp_path, state) as c:
            await three_planes(c, tmp_path, replicas=1)
            seen: list[tuple[float, str, int]] = []  # (when, plane, status)

            async def load(name):
                proc = c.planes[name]
                while True:
                    try:
                        status, _ = await chat(proc)
                        admin = (await api(proc, "GET", "/api/gateway/tenants")).status_code
                    except (httpx.HTTPError, OSError):
                        status = admin = 0  # refused or timed out: a plane that died would show here
                    seen.extend([(trio.current_time(), name, status), (trio.current_time(), name, admin)])
                    await trio.sleep(0.05)

            async with trio.open_nursery() as nursery:
                for name in c.planes:
                    nursery.start_soon(load, name)
                await wait_until(lambda: len(seen) > 30)
                await trio.to_thread.run_sync(postgres_server.restart)
                restarted = trio.current_time()
                # Past a settling window every plane answers every request: nothing failed for good.
                try:
                    with trio.fail_after(60):
                        await wait_until(lambda: _all_ok_since(seen, restarted + 10, len(c.planes)))
                except trio.TooSlowError:
                    trace = [(round(when - restarted, 2), name, status) for when, name, status in seen if status != 200]
                    raise AssertionError(f"{trace[-60:]}\n" + "\n".join(
                        f"--- {n}\n{p.output()[-3000:]}" for n, p in c.planes.items())) from None
                nursery.cancel_scope.cancel()
            assert all(proc.alive() for proc in c.planes.values())
            assert await c.leader() in c.planes
            statuses = {status for when, _, status in seen if when > restarted + 10}
            assert statuses == {200}, statuses


def _all_ok_since(seen, since, planes):
    """Each plane has answered at least 10 requests after `since`, every one of them 200."""
    late = [(name, status) for when, name, status in seen if when > since]
    return all(status == 200 for _, status in late) and len({n for n, _ in late}) == planes and len(late) >= 10 * planes


async def say(proc, session_id, token, text):
    """One turn on the session's WebSocket through plane `proc`; the reply's text."""
    host, port = proc.url.removeprefix("http://").split(":")
    async with trio_websocket.open_websocket(host, int(port), f"/ws/sessions/{session_id}?token={token}",
                                             use_ssl=False) as ws:
        await ws.send_message(json.dumps({"type": "text", "content": text}))
        while (message := json.loads(await ws.get_message()))["type"] == "text_delta":
            pass
    assert message["type"] == "text" and message["done"], message
    return message["content"]
