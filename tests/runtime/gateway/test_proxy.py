"""Routing, streaming, retry, cancellation and error statuses through the real tunnel to the echo worker."""

import json

import httpx
import pytest
import trio

from tests.polling import wait_until
from tests.runtime.gateway.conftest import ADMIN_AUTH

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hello there friend"}]}


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


async def test_chat_completion_and_models(cluster):
    key = await cluster.key()
    with trio.fail_after(20):
        models = await cluster.client.get("/v1/models", headers=bearer(key))
        assert models.status_code == 200
        assert [m["id"] for m in models.json()["data"]] == ["echo"] and models.json()["object"] == "list"
        r = await cluster.client.post("/v1/chat/completions", headers=bearer(key), json=CHAT)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["choices"][0]["message"]["content"] == "hello there friend"
        assert body["usage"]["completion_tokens"] == 3
        emb = await cluster.client.post("/v1/embeddings", headers=bearer(key), json={"model": "echo", "input": "x"})
        assert emb.status_code == 200 and len(emb.json()["data"][0]["embedding"]) == 64


async def test_streaming_relays_chunks_as_they_come(cluster):
    key = await cluster.key()
    body = {**CHAT, "stream": True, "echo_tokens": 5, "echo_delay_s": 0.2,
            "stream_options": {"include_usage": True}}
    with trio.fail_after(20):
        async with cluster.client.stream("POST", "/v1/chat/completions", headers=bearer(key), json=body) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            began = trio.current_time()
            arrivals, events = [], []
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    arrivals.append(trio.current_time() - began)
                    events.append(line[6:])
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["usage"]["completion_tokens"] == 5
        # Chunk by chunk: the first token arrives long before the last (no buffering).
        assert arrivals[-1] - arrivals[0] > 0.6


async def test_client_disconnect_cancels_the_worker_request(cluster):
    key = await cluster.key()
    body = {**CHAT, "stream": True, "echo_tokens": 1000, "echo_delay_s": 0.05}
    async with httpx.AsyncClient(base_url=cluster.worker_url, timeout=5) as worker:
        with trio.fail_after(20):
            async with cluster.client.stream("POST", "/v1/chat/completions", headers=bearer(key), json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        # Asked inside the loop: an abandoned line iterator may be finalised
                        # (closing the connection) as soon as the loop is left.
                        assert (await worker.get("/health")).json()["active_requests"] == 1
                        break
            left = trio.current_time()
            while (await worker.get("/health")).json()["active_requests"]:  # noqa: ASYNC110
                await trio.sleep(0.02)
            assert trio.current_time() - left < 1.0
            await wait_until(lambda: not cluster.handle.gateway.router.in_flight)


async def test_client_disconnect_cancels_a_non_streamed_request_still_generating(cluster):
    key = await cluster.key()
    body = {**CHAT, "echo_tokens": 100, "echo_delay_s": 0.1}  # 10 s before the worker answers
    async with httpx.AsyncClient(base_url=cluster.worker_url, timeout=5) as worker:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:

                async def ask():
                    await cluster.client.post("/v1/chat/completions", headers=bearer(key), json=body)

                nursery.start_soon(ask)
                while not (await worker.get("/health")).json()["active_requests"]:  # noqa: ASYNC110
                    await trio.sleep(0.02)
                nursery.cancel_scope.cancel()  # the client goes away before any byte of the reply
            left = trio.current_time()
            while (await worker.get("/health")).json()["active_requests"]:  # noqa: ASYNC110
                await trio.sleep(0.02)
            assert trio.current_time() - left < 1.0
            await wait_until(lambda: not cluster.handle.gateway.router.in_flight)


async def test_a_reader_that_stops_bounds_what_is_buffered(cluster):
    """A client that stops reading stops the worker after about the tunnel window plus socket buffers."""
    key = await cluster.key()
    body = {"model": "echo", "prompt": "word " * 50, "stream": True, "echo_tokens": 100_000}
    with trio.fail_after(30):
        stream = await trio.open_tcp_stream("127.0.0.1", int(cluster.url.rsplit(":", 1)[1]))
        payload = json.dumps(body).encode()
        await stream.send_all(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                              + f"authorization: Bearer {key}\r\ncontent-length: {len(payload)}\r\n\r\n".encode()
                              + payload)
        first = await stream.receive_some(1024)  # the head and a first piece, then stop reading
        assert first.startswith(b"HTTP/1.1 200"), first
        async with httpx.AsyncClient(base_url=cluster.worker_url, timeout=5) as worker:
            # An observation window, not a wait: an unbounded relay would finish the ~20 MB answer in it.
            await trio.sleep(1.5)
            assert (await worker.get("/health")).json()["active_requests"] == 1
        await stream.aclose()
    gateway = cluster.handle.gateway
    with trio.fail_after(10):
        await wait_until(lambda: not gateway.router.in_flight)
    sent = gateway.metrics.tokens
    # Tokens relayed before the gateway stopped pulling: far fewer than the 100,000 asked for.
    assert sum(sent.values()) < 30_000


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "code"), [
    ("POST", "/v1/chat/completions", CHAT, {}, 401, "invalid_api_key"),
    ("POST", "/v1/chat/completions", CHAT, {"Authorization": "Bearer fgk_0000000000000000_" + "A" * 43}, 401,
     "invalid_api_key"),
    ("GET", "/v1/models", None, {"Authorization": "Basic abc"}, 401, "invalid_api_key"),
    ("POST", "/v1/chat/completions", {**CHAT, "model": "nope"}, None, 404, "model_not_found"),
    ("POST", "/v1/images/generations", {"model": "dalle", "prompt": "x"}, None, 404, "model_not_found"),
    ("POST", "/v1/chat/completions", {"messages": CHAT["messages"]}, None, 400, "missing_model"),
    ("POST", "/v1/chat/completions", {**CHAT, "model": 3}, None, 400, "invalid_request"),
    ("POST", "/v1/chat/completions", {**CHAT, "model": "echo\r\nx-evil: 1"}, None, 400, "invalid_model"),
    ("POST", "/v1/chat/completions", {**CHAT, "model": "echo?x=1&y"}, None, 400, "invalid_model"),
    ("POST", "/v1/chat/completions", {**CHAT, "n": 0}, None, 400, "invalid_request"),
    ("POST", "/v1/chat/completions", {**CHAT, "max_tokens": -5}, None, 400, "invalid_request"),
    ("POST", "/v1/chat/completions", {**CHAT, "max_tokens": "ten"}, None, 400, "invalid_request"),
    ("POST", "/v1/chat/completions", {**CHAT, "stream": "yes"}, None, 400, "invalid_request"),
    ("POST", "/v1/chat/completions", {"model": "echo"}, None, 400, "invalid_request"),
    ("POST", "/v1/chat/completions", [1, 2], None, 400, "invalid_json"),
    ("POST", "/v1/chat/completions", b"{nope", None, 400, "invalid_json"),
    ("POST", "/v1/chat/completions", "5MiB", None, 413, "request_too_large"),
    ("GET", "/v1/chat/completions", None, None, 405, "method_not_allowed"),
])
async def test_bad_requests_get_openai_errors(cluster, method, path, body, headers, status, code):
    key = await cluster.key()
    body = b"x" * (5 << 20) if body == "5MiB" else body
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body} if body is not None else {}
    with trio.fail_after(20):
        r = await cluster.client.request(method, path, headers=bearer(key) if headers is None else headers, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"] and error["type"]
    assert key not in r.text


async def test_the_workers_date_and_server_headers_are_not_relayed(cluster):
    key = await cluster.key()
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=cluster.worker_url, timeout=5) as worker:
            direct = await worker.post("/v1/chat/completions", json=CHAT)
        assert "server" in direct.headers and "date" in direct.headers  # what there is to drop
        r = await cluster.client.post("/v1/chat/completions", headers=bearer(key), json=CHAT)
    assert r.status_code == 200
    assert len(r.headers.get_list("date")) == 1 and "server" not in r.headers


async def test_no_ready_replica_is_a_503(cluster):
    key = await cluster.key()
    r = await cluster.client.patch("/api/deployments/echo", headers=ADMIN_AUTH, json={"replicas": 0})
    assert r.status_code == 200
    with trio.fail_after(10):
        await wait_until(lambda: not cluster.handle.scheduler.routes("echo"))
        r = await cluster.client.post("/v1/chat/completions", headers=bearer(key), json=CHAT)
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_ready_replica" and "retry-after" in r.headers


@pytest.mark.parametrize("cluster", [{"gateway_settings": {"first_byte_timeout": 0.5}}], indirect=True)
async def test_upstream_timeout_is_a_504(cluster):
    key = await cluster.key()
    with trio.fail_after(20):
        r = await cluster.client.post("/v1/chat/completions", headers=bearer(key),
                                      json={**CHAT, "echo_tokens": 10, "echo_delay_s": 0.5})
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"


async def test_a_failing_replica_is_retried_on_another(cluster):
    key = await cluster.key()
    await cluster.add_node("http://127.0.0.1:1")  # a node whose worker cannot be reached: answers 502
    r = await cluster.client.patch("/api/deployments/echo", headers=ADMIN_AUTH, json={"replicas": 2})
    assert r.status_code == 200
    with trio.fail_after(20):
        await wait_until(lambda: len({r.node_id for r in cluster.handle.scheduler.routes("echo")}) == 2)
        for _ in range(12):
            r = await cluster.client.post("/v1/chat/completions", headers=bearer(key), json=CHAT)
            assert r.status_code == 200, r.text
    assert cluster.handle.gateway.metrics.retries >= 1


async def test_health_and_metrics(cluster):
    key = await cluster.key()
    health = (await cluster.client.get("/health")).json()
    assert health["status"] == "healthy" and set(health["roles"]) == {"hub", "scheduler", "gateway"}
    await cluster.client.post("/v1/chat/completions", headers=bearer(key), json=CHAT)
    metrics = cluster.handle.gateway.metrics
    with trio.fail_after(5):  # counted just after the last byte went out
        await wait_until(lambda: metrics.requests)
    text = (await cluster.client.get("/metrics", headers=ADMIN_AUTH)).text
    assert 'flowctl_gateway_requests_total{model="echo",tenant="acme",status="200",via="http"} 1' in text
    assert 'flowctl_gateway_tokens_total{model="echo",tenant="acme",kind="completion",via="http"} 3' in text
    assert "flowctl_gateway_request_seconds_bucket" in text
