"""IN FLIGHT in `flowctl status` is the plane's live count: 1 while a request runs, 0 the moment it ended.

It used to be the node's count as sampled by its last heartbeat, so a request that ended
between two heartbeats stayed "in flight" until the next one (5 s by default).
"""

import httpx
import trio

from tests.polling import wait_until
from tests.runtime.gateway.conftest import ADMIN_AUTH

SLOW_CHAT = {"model": "echo", "messages": [{"role": "user", "content": "one two three"}], "echo_delay_s": 0.3}


async def in_flight(cluster):
    status = (await cluster.client.get("/api/cluster/status", headers=ADMIN_AUTH)).json()
    return [n["outstanding"] for n in status["nodes"]]


async def test_in_flight_is_one_during_a_request_and_zero_once_it_ended(cluster, nursery):
    auth = {"Authorization": f"Bearer {await cluster.key()}"}
    scheduler = cluster.handle.scheduler
    ended = trio.Event()

    async def slow_request():
        async with httpx.AsyncClient(base_url=cluster.url, timeout=30) as client:
            r = await client.post("/v1/chat/completions", json=SLOW_CHAT, headers=auth)
            assert r.status_code == 200, r.text
        ended.set()

    with trio.fail_after(20):
        nursery.start_soon(slow_request)
        await wait_until(lambda: cluster.handle.dispatcher.router.by_node)
        assert await in_flight(cluster) == [1]
        # A heartbeat taken while the request runs reports it too; it must not outlive the request.
        beats = scheduler.registry.nodes()[0].heartbeats
        await wait_until(lambda: scheduler.registry.nodes()[0].heartbeats > beats)
        await ended.wait()
        assert await in_flight(cluster) == [0]


async def test_a_streamed_request_the_client_left_is_not_in_flight(cluster):
    auth = {"Authorization": f"Bearer {await cluster.key()}"}
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=cluster.url, timeout=30) as client:
            async with client.stream("POST", "/v1/chat/completions", json={**SLOW_CHAT, "stream": True},
                                     headers=auth) as stream:
                async for _ in stream.aiter_bytes():
                    assert await in_flight(cluster) == [1]
                    break  # the client goes away mid-reply
        await wait_until(lambda: not cluster.handle.dispatcher.router.by_node)
        assert await in_flight(cluster) == [0]
