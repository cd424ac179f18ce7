"""A replica that dies mid-reply: the client sees an error, never a reply that looks complete."""

import json
import logging

import httpx
import trio

from tests.runtime.gateway.conftest import _start_cluster

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hello there friend"}]}


async def test_a_worker_dying_mid_stream_ends_the_reply_with_an_error(nursery, tmp_path, caplog):
    cluster, worker = await _start_cluster(nursery, tmp_path)
    try:
        await cluster.deploy()
        key = await cluster.key()
        body = {**CHAT, "stream": True, "echo_tokens": 1000, "echo_delay_s": 0.02}
        events, cut_short = [], False
        with trio.fail_after(20), caplog.at_level(logging.WARNING, logger="flowctl.gateway"):
            async with cluster.client.stream("POST", "/v1/chat/completions", json=body,
                                             headers={"Authorization": f"Bearer {key}"}) as r:
                assert r.status_code == 200
                try:
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            events.append(line[6:])
                            if len(events) == 3:
                                worker.proc.kill()
                except httpx.RemoteProtocolError:
                    cut_short = True  # the chunked body never got its end
        assert cut_short and "[DONE]" not in events
        error = json.loads(events[-1])["error"]
        assert error["type"] == "upstream_error" and "echo" in error["message"]
        assert all("choices" in json.loads(e) for e in events[:3])
        assert [r for r in caplog.records if "cut short" in r.getMessage()]
        assert not [r for r in caplog.records if r.exc_info]  # one line, no traceback
        assert cluster.handle.gateway.metrics.upstream_failures == 1
    finally:
        with trio.CancelScope(shield=True):
            await cluster.client.aclose()
            await trio.to_thread.run_sync(worker.stop)


async def test_an_error_reply_of_the_only_replica_reaches_the_client_whole(nursery, tmp_path):
    cluster, worker = await _start_cluster(nursery, tmp_path, nodes=0)
    try:
        await cluster.add_node("http://127.0.0.1:1")  # its worker cannot be reached: the node answers 502
        await cluster.deploy()
        key = await cluster.key()
        with trio.fail_after(20):
            r = await cluster.client.post("/v1/chat/completions", json=CHAT,
                                          headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 502 and int(r.headers["content-length"]) == len(r.content)
        assert "worker unreachable" in r.json()["error"]["message"]
    finally:
        with trio.CancelScope(shield=True):
            await cluster.client.aclose()
            await trio.to_thread.run_sync(worker.stop)
