"""Issue 18's limiter case with real processes: one key at 600 rpm through two `flowctl up --redis` planes
for 60 s, and the gateway under load while its Redis restarts."""

from __future__ import annotations

import httpx
import pytest
import trio

from bench._scale_limits import CHAT, drive, open_planes, seed_key
from runtime.dispatch.limits import burst_for
from tests.polling import wait_until
from tests.runtime.gateway.conftest import _start_cluster
from tests.runtime.http.rawhttp import open_raw_connection

pytestmark = pytest.mark.engines

RPM = 600


@pytest.mark.slow
async def test_one_key_at_600_rpm_through_two_planes_for_60_s(redis_url, tmp_path):
    with trio.fail_after(300):
        async with open_planes(tmp_path, redis_url, count=2, rpm=RPM) as planes:
            result = await drive(planes.urls, planes.key, rpm=RPM, offered=2.0, seconds=60.0)
    statuses = result.statuses()
    assert set(statuses) == {200, 429}, (statuses, result.errors[:12])  # nothing else: no 5xx, no dropped connection
    admitted = result.admitted_in_window()
    refused = sum(1 for t, s in result.sent if s == 429 and result.window_start <= t < result.window_end)
    assert refused >= 100, refused  # the offered load stayed above the limit all along
    assert abs(admitted - RPM) <= 0.05 * RPM, (admitted, refused)  # within 5% of 600/min
    assert result.worst_excess(RPM) <= 0, result.worst_excess(RPM)  # never above rate * time + burst
    assert sum(1 for _, s in result.sent if s == 200) >= burst_for(RPM) + admitted - 2


async def test_a_redis_restart_under_load_gives_503s_then_admission_resumes(redis_server, nursery, tmp_path):
    cluster, worker = await _start_cluster(nursery, tmp_path, gateway_settings={
        "redis": redis_server.url, "redis_options": {"timeout": 0.5}})
    try:
        await cluster.deploy()
        key = await cluster.key(rpm=60000, max_concurrency=50)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        seen: list[int] = []
        bodies: list[dict] = []
        phase = {"name": "up"}
        by_phase: dict[str, list[int]] = {"up": [], "down": [], "back": []}

        async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as client:

            async def load():
                while True:
                    r = await client.post("/v1/chat/completions", content=CHAT, headers=headers)
                    seen.append(r.status_code)
                    by_phase[phase["name"]].append(r.status_code)
                    if r.status_code == 503:
                        bodies.append(r.json())
                    await trio.sleep(0.01)

            with trio.fail_after(60):
                async with trio.open_nursery() as load_nursery:
                    for _ in range(4):
                        load_nursery.start_soon(load)
                    while len(by_phase["up"]) < 20:  # noqa: ASYNC110 - the load runs in other tasks
                        await trio.sleep(0.01)
                    redis_server.stop()
                    phase["name"] = "down"
                    while len(by_phase["down"]) < 20:  # noqa: ASYNC110
                        await trio.sleep(0.01)
                    await trio.to_thread.run_sync(redis_server.start)
                    phase["name"] = "back"
                    while by_phase["back"][-20:].count(200) < 20:  # noqa: ASYNC110
                        await trio.sleep(0.01)
                    load_nursery.cancel_scope.cancel()
        assert set(by_phase["up"]) == {200}
        assert 503 in by_phase["down"] and set(by_phase["down"]) <= {200, 503}  # 200: admitted just before
        assert set(seen) <= {200, 503}  # never a 500, never a 429 for an unlimited-enough key
        error = bodies[0]["error"]
        assert error["code"] == "limiter_unavailable" and "Redis at 127.0.0.1" in error["message"]
        assert by_phase["back"][-20:] == [200] * 20
    finally:
        with trio.CancelScope(shield=True):
            await cluster.client.aclose()
            await trio.to_thread.run_sync(worker.stop)


async def test_requests_and_sessions_on_two_planes_share_one_keys_rate(redis_url, nursery, tmp_path):
    # Two in-process planes, one Redis, the same key (one gateway.db seeded for both): chat requests
    # through one and realtime sessions opened through the other draw on one budget.
    key = await trio.to_thread.run_sync(seed_key, [tmp_path / "a" / "plane", tmp_path / "b" / "plane"], 30)
    started = []
    try:
        for name in ("a", "b"):
            started.append(await _start_cluster(nursery, tmp_path / name, gateway_settings={"redis": redis_url}))
        for cluster, _ in started:
            await cluster.deploy()
        auth = {"Authorization": f"Bearer {key}"}
        statuses = []
        began = trio.current_time()
        with trio.fail_after(30):
            for i in range(6):
                cluster = started[i % 2][0]
                if i % 2 == 0:
                    r = await cluster.client.post("/v1/chat/completions", headers=auth, content=CHAT)
                else:
                    r = await cluster.client.post("/v1/sessions", headers=auth, json={"model": "echo"})
                statuses.append(r.status_code)
                if r.status_code == 429:
                    assert "request rate limit of this key reached (30 requests/min)" in r.text
        elapsed = trio.current_time() - began
        admitted = sum(1 for s in statuses if s in (200, 201))
        assert set(statuses) <= {200, 201, 429}, statuses
        assert 3 <= admitted <= 3 + elapsed / 2 + 1, (statuses, elapsed)  # burst 3, then one per 2 s
        assert 201 in statuses[:3] and 200 in statuses[:3]
    finally:
        with trio.CancelScope(shield=True):
            for cluster, worker in started:
                await cluster.client.aclose()
                await trio.to_thread.run_sync(worker.stop)


async def test_a_gateway_request_costs_one_redis_call_unless_its_body_trickles_in(redis_url, nursery, tmp_path):
    # A key with every kind of limit. A body sent with its headers: one decision call per request
    # (the slot and the rates together). A body still arriving: the slot first, the rates once
    # it is whole, two calls. arrived_wait is generous so a loaded box cannot tip one into the other.
    cluster, worker = await _start_cluster(nursery, tmp_path, gateway_settings={"redis": redis_url,
                                                                                 "arrived_wait": 0.5})
    try:
        await cluster.deploy()
        key = await cluster.key(rpm=60000, tpm=10**8, max_concurrency=2)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        limiter = cluster.handle.gateway.dispatcher.limiter
        decisions: list[str] = []
        decide = limiter._decide

        async def counted(script, keys, args):  # the real call, counted: one per decision sent to Redis
            decisions.append(script.name)
            return await decide(script, keys, args)

        limiter._decide = counted
        with trio.fail_after(30):
            for _ in range(20):
                r = await cluster.client.post("/v1/chat/completions", content=CHAT, headers=headers)
                assert r.status_code == 200, r.text
            assert decisions == ["admit"] * 20
            await wait_until(lambda: not limiter._held)  # given back once the handler returns, just after the reply
            decisions.clear()
            async with open_raw_connection(cluster.url) as slow:
                await slow.send_head("POST", "/v1/chat/completions", [("Authorization", f"Bearer {key}"),
                                     ("Content-Type", "application/json"), ("Content-Length", str(len(CHAT)))])
                await slow.send(CHAT[:5])
                await wait_until(lambda: len(limiter._held) == 1)  # the slot, taken before the rest of the body
                assert len(decisions) == 1
                await slow.send(CHAT[5:])
                assert (await slow.response()).status == 200
            assert len(decisions) == 2
    finally:
        with trio.CancelScope(shield=True):
            await cluster.client.aclose()
            await trio.to_thread.run_sync(worker.stop)
