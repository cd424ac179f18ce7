"""A realtime session on the real Gemma 3 270M: plane, node tunnel, llama-chat worker (slow).

The node's executor points at a small recording proxy in front of the worker: it keeps
every chat request the gateway sent (so the test sees the prompt of each utterance) and
sets the sampling the session API does not expose (temperature 0 and a few tokens), so
replies are deterministic and quick. Stopping the proxy's upstream stream is what stops the
worker, exactly as when the node agent talks to the worker itself.
"""

from __future__ import annotations

import json
import time
from functools import partial

import httpx
import pytest
import trio
import trio_websocket

from runtime.http import open_test_server
from runtime.node.agent import AgentConfig, run_agent
from runtime.plane import PlaneSettings, serve_control_plane
from tests.examples.llama_fakes import LLAMA_DIR
from tests.examples.test_llama_chat import _skip_reason
from tests.examples.workers import spawn_worker, wait_for_health
from tests.hub_store.bundles import make_bundle
from tests.polling import wait_until
from tests.runtime.scheduler.test_cluster import FakeExecutor

MODEL = "gemma-3-270m"
ADMIN = "llama-session-admin"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
IO_TIMEOUT = 60
SHORT = {"temperature": 0, "max_tokens": 12}

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")]


@pytest.fixture(scope="module")
def llama():
    """One worker (one model load) for the module."""
    worker = spawn_worker(LLAMA_DIR, env={"LLAMA_N_THREADS": "2", "LLAMA_N_CTX": "1024"}, timeout=120)
    yield worker
    assert worker.stop() == 0, worker.stderr_text()


class Proxy:
    """An ASGI app relaying POSTs to the worker: records each body, applies `overrides`."""

    def __init__(self, worker_url: str):
        self.worker_url = worker_url
        self.requests: list[dict] = []
        self.overrides: dict = dict(SHORT)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        data = json.loads(body)
        self.requests.append(data)
        async with trio.open_nursery() as nursery:
            # The server does not cancel an app whose client left; closing upstream is up to us.
            async def until_disconnect():
                while (await receive())["type"] != "http.disconnect":
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(until_disconnect)
            async with httpx.AsyncClient(timeout=IO_TIMEOUT) as client:
                async with client.stream("POST", self.worker_url + scope["path"],
                                         json={**data, **self.overrides}) as upstream:
                    await send({"type": "http.response.start", "status": upstream.status_code,
                                "headers": [(b"content-type", upstream.headers["content-type"].encode())]})
                    async for chunk in upstream.aiter_raw():
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            nursery.cancel_scope.cancel()


@pytest.fixture
async def cluster(nursery, tmp_path, llama):
    """The plane (hub + scheduler + gateway), one node in front of the proxy; yields (client, key, proxy)."""
    proxy = Proxy(llama.url)
    proxy_url = await nursery.start(_serve, proxy)
    models = [{"model_id": MODEL, "model_type": "chat", "version": "1.0.0", "path": "worker.py"}]
    bundle = make_bundle(tmp_path, "1.0.0", service_id="llama-chat", files={"worker.py": b"\n"}, models=models)
    settings = PlaneSettings(data_dir=tmp_path / "plane", port=0, roles=("hub", "scheduler", "gateway"),
                             heartbeat_interval=0.2)
    handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))
    async with httpx.AsyncClient(base_url=handle.url, timeout=IO_TIMEOUT) as client:
        with trio.fail_after(IO_TIMEOUT):
            r = await client.put("/api/services/llama-chat/1.0.0", headers=ADMIN_AUTH,
                                 content=bundle.path.read_bytes())
            assert r.status_code in (200, 201), r.text
            token = (await client.post("/api/cluster/tokens", headers=ADMIN_AUTH,
                                       json={"name": "n"})).json()["token"]
            await nursery.start(run_agent, AgentConfig(url=handle.url, token=token, node_id="n1", name="n1"),
                                FakeExecutor(proxy_url, models=(MODEL,)))
            r = await client.post("/api/deployments", headers=ADMIN_AUTH, json={"service": "llama-chat"})
            assert r.status_code == 201, r.text
            await wait_until(lambda: handle.scheduler.routes(MODEL))
            await client.post("/api/gateway/tenants", headers=ADMIN_AUTH, json={"name": "acme"})
            key = (await client.post("/api/gateway/keys", headers=ADMIN_AUTH, json={"tenant": "acme"})).json()["key"]
        client.headers["Authorization"] = f"Bearer {key}"
        yield client, proxy


async def _serve(app, *, task_status=trio.TASK_STATUS_IGNORED):
    async with open_test_server(app) as url:
        task_status.started(url)
        await trio.sleep_forever()


async def open_session(client, **body):
    r = await client.post("/v1/sessions", json={"model": MODEL, **body})
    assert r.status_code == 201, r.text
    created = r.json()
    return created, trio_websocket.open_websocket_url(f"{created['engine_url']}?token={created['engine_token']}")


async def utter(ws, text):
    """Send one text; the streamed deltas and the final message."""
    await ws.send_message(json.dumps({"type": "text", "content": text}))
    deltas = []
    while (message := json.loads(await ws.get_message()))["type"] == "text_delta":
        assert message["role"] == "assistant"
        deltas.append(message["delta"])
    return deltas, message


async def test_replies_stream_and_the_history_carries_over(cluster, llama):
    client, proxy = cluster
    with trio.fail_after(IO_TIMEOUT):
        created, socket = await open_session(client, system_prompt="Answer in one short sentence.")
        async with socket as ws:
            deltas1, end1 = await utter(ws, "What is the capital of France?")
            deltas2, end2 = await utter(ws, "And what is the capital of Italy?")
        info = (await client.get(f"/v1/sessions/{created['session_id']}")).json()
        # The same prompt straight to the worker, greedy: the session's reply is the model's own.
        async with httpx.AsyncClient(base_url=llama.url, timeout=IO_TIMEOUT) as worker:
            direct = await worker.post("/v1/chat/completions",
                                       json={**proxy.requests[1], **SHORT, "stream": False})
    for deltas, end in ((deltas1, end1), (deltas2, end2)):
        assert end["type"] == "text" and end["done"] is True and end["utterance_id"]
        assert len(deltas) > 1 and "".join(deltas) == end["content"] and end["content"].strip()
    assert end1["utterance_id"] != end2["utterance_id"]
    system = {"role": "system", "content": "Answer in one short sentence."}
    first = {"role": "user", "content": "What is the capital of France?"}
    assert [r["messages"] for r in proxy.requests] == [
        [system, first],
        [system, first, {"role": "assistant", "content": end1["content"]},
         {"role": "user", "content": "And what is the capital of Italy?"}],
    ]
    assert all(r["model"] == MODEL and r["stream"] is True for r in proxy.requests)
    assert direct.json()["choices"][0]["message"]["content"] == end2["content"]
    assert info["node_id"] == "n1" and info["history_tokens"] > 20


async def test_cancel_stops_generation_promptly_and_keeps_the_partial_reply(cluster, llama):
    client, proxy = cluster
    proxy.overrides = {"temperature": 0, "max_tokens": 600}
    async with httpx.AsyncClient(base_url=llama.url, timeout=IO_TIMEOUT) as worker:
        with trio.fail_after(IO_TIMEOUT):
            _, socket = await open_session(client)
            async with socket as ws:
                await ws.send_message(json.dumps({"type": "text", "content": "Write a long story about a dragon."}))
                deltas = []
                while len(deltas) < 3:
                    message = json.loads(await ws.get_message())
                    assert message["type"] == "text_delta", message  # still generating: 600 tokens take many seconds
                    deltas.append(message["delta"])
                before = (await worker.get("/health")).json()["tokens_generated"]
                began = time.monotonic()
                await ws.send_message(json.dumps({"type": "cancel"}))
                while (message := json.loads(await ws.get_message()))["type"] == "text_delta":
                    deltas.append(message["delta"])
                cancelled_in = time.monotonic() - began
                idle = await wait_for_health(worker, lambda b: b["active_requests"] == 0, deadline_s=2)
                # The session is usable right after, and the partial reply is in its history.
                proxy.overrides = dict(SHORT)
                after, end = await utter(ws, "Who wins?")
    assert message["cancelled"] is True and message["content"] == "".join(deltas) and "done" not in message
    assert cancelled_in < 2.0
    # Stopped about when cancelled (a token takes 15-40 ms here), not after 600 tokens.
    assert idle["tokens_generated"] - before < 100
    assert proxy.requests[-1]["messages"][-2:] == [
        {"role": "assistant", "content": message["content"]}, {"role": "user", "content": "Who wins?"}]
    assert end["done"] is True and "".join(after) == end["content"]
