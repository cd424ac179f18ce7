"""Clients hanging up on streamed replies: only their own streams end (issue 12, item 1).

Many streaming requests are cut at random moments while a bystander tenant streams a long
reply. The bystander's reply must arrive whole, and the node must keep the very same
control connection (same epoch: no reconnect), so nobody else's work was disturbed.
"""

from __future__ import annotations

import json
import random

import httpx
import trio

from tests.runtime.gateway.conftest import ADMIN_AUTH

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "a b c d"}], "stream": True}
ROUNDS = 6
CUTS_PER_ROUND = 12


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def stream_and_hang_up(client: httpx.AsyncClient, key: str, cut_after: float) -> None:
    """Start a long stream, read until `cut_after` seconds have passed, then close the socket."""
    body = {**CHAT, "echo_tokens": 100_000, "echo_delay_s": 0.001}
    with trio.move_on_after(cut_after):
        async with client.stream("POST", "/v1/chat/completions", headers=bearer(key), json=body) as r:
            async for _ in r.aiter_raw():
                pass


async def cut_streams(url: str, key: str, rounds: int, per_round: int, rng: random.Random) -> None:
    """`rounds` bursts of `per_round` concurrent streams, each cut at a random moment."""
    for _ in range(rounds):
        # One connection per stream, so closing it is a real TCP hang-up the plane must notice.
        clients = [httpx.AsyncClient(base_url=url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0))
                   for _ in range(per_round)]
        try:
            async with trio.open_nursery() as nursery:
                for client in clients:
                    nursery.start_soon(stream_and_hang_up, client, key, rng.uniform(0.0, 0.6))
        finally:
            for client in clients:
                await client.aclose()


async def full_stream(client: httpx.AsyncClient, key: str, tokens: int) -> list[str]:
    """A streamed reply read to its end: the data lines."""
    body = {**CHAT, "echo_tokens": tokens, "echo_delay_s": 0.002}
    events = []
    async with client.stream("POST", "/v1/chat/completions", headers=bearer(key), json=body) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    return events


async def test_hanging_up_on_streams_never_disturbs_the_node_or_a_bystander(cluster):
    cutter = await cluster.key("cutter")
    bystander = await cluster.key("bystander")
    registry = cluster.handle.scheduler.registry
    epoch = registry.get("node-1").epoch
    rng = random.Random(12)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cut_streams, cluster.url, cutter, ROUNDS, CUTS_PER_ROUND, rng)
            events = await full_stream(cluster.client, bystander, tokens=1500)
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        words = ["a", " b", " c", " d"]
        assert content == "".join(words[i % 4] for i in range(1500))
        node = registry.get("node-1")
        assert node.epoch == epoch and str(node.state) == "ready", "the node's connection was replaced"
        # The node still serves everyone, at once.
        r = await cluster.client.post("/v1/chat/completions", headers=bearer(cutter),
                                      json={**CHAT, "stream": False})
        assert r.status_code == 200, r.text
        status = (await cluster.client.get("/api/cluster/status", headers=ADMIN_AUTH)).json()
        assert status["nodes"][0]["state"] == "ready"
