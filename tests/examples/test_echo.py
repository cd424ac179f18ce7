"""The echo worker as platform tests see it: a real subprocess speaking OpenAI over HTTP."""

from __future__ import annotations

import base64
import json
import math
import signal
import socket
import struct
import time
from functools import partial

import httpx
import pytest
import trio

from tests.examples.workers import EXAMPLES, Worker, spawn_worker, sse_data, wait_for_health

ECHO = EXAMPLES / "echo"
IO_TIMEOUT = 20


@pytest.fixture(scope="module")
def echo():
    worker = spawn_worker(ECHO)
    yield worker
    worker.stop()


@pytest.fixture
async def client(echo: Worker):
    async with httpx.AsyncClient(base_url=echo.url, timeout=IO_TIMEOUT) as c:
        yield c


def chat_body(text="hello there world", **extra):
    return {"model": "echo", "messages": [{"role": "system", "content": "be brief"},
                                          {"role": "user", "content": text}], **extra}


async def test_health_advertises_concurrency(client):
    with trio.fail_after(IO_TIMEOUT):
        r = await client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["models"] == ["echo"]
    assert body["max_concurrency"] == 16
    assert body["active_requests"] == 0 and body["queued_requests"] == 0


async def test_models_lists_the_manifest_model(client):
    with trio.fail_after(IO_TIMEOUT):
        r = await client.get("/v1/models")
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == ["echo"]


async def test_chat_echoes_last_user_message_with_usage(client):
    with trio.fail_after(IO_TIMEOUT):
        r = await client.post("/v1/chat/completions", json=chat_body())
    body = r.json()
    assert r.status_code == 200 and body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "hello there world"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


async def test_chat_accepts_content_parts_and_max_tokens(client):
    parts = [{"type": "text", "text": "one two"}, {"type": "text", "text": " three"}]
    body = {"model": "echo", "messages": [{"role": "user", "content": parts}], "max_tokens": 2}
    with trio.fail_after(IO_TIMEOUT):
        r = await client.post("/v1/chat/completions", json=body)
    choice = r.json()["choices"][0]
    assert choice["message"]["content"] == "one two" and choice["finish_reason"] == "length"


async def test_completions_answer_each_prompt(client):
    body = {"model": "echo", "prompt": ["alpha beta", "gamma"]}
    with trio.fail_after(IO_TIMEOUT):
        r = await client.post("/v1/completions", json=body)
    out = r.json()
    assert [c["text"] for c in out["choices"]] == ["alpha beta", "gamma"]
    assert out["usage"]["completion_tokens"] == 3


async def test_stop_sequence_cuts_the_answer(client):
    body = {"model": "echo", "prompt": "red green blue", "stop": [" blu", "zz"]}
    with trio.fail_after(IO_TIMEOUT):
        r = await client.post("/v1/completions", json=body)
    choice = r.json()["choices"][0]
    assert choice["text"] == "red green" and choice["finish_reason"] == "stop"


async def test_chat_stream_with_usage_ends_with_done(client):
    body = chat_body(stream=True, stream_options={"include_usage": True})
    with trio.fail_after(IO_TIMEOUT):
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            events = await sse_data(r.aiter_lines())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "hello there world"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    assert all(c["usage"] is None for c in chunks[:-1])


async def test_completion_stream_without_usage(client):
    body = {"model": "echo", "prompt": "a b c d", "stream": True, "max_tokens": 3}
    with trio.fail_after(IO_TIMEOUT):
        async with client.stream("POST", "/v1/completions", json=body) as r:
            events = await sse_data(r.aiter_lines())
    assert events[-1] == "[DONE]"
    assert [e["choices"][0]["text"] for e in events[:-1]] == ["a", " b", " c", ""]
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert all("usage" not in e for e in events[:-1])


async def test_echo_tokens_and_delay_shape_the_stream(client):
    body = chat_body("x", stream=True, echo_tokens=5, echo_delay_s=0.01)
    with trio.fail_after(IO_TIMEOUT):
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            events = await sse_data(r.aiter_lines())
    pieces = [e["choices"][0]["delta"].get("content") for e in events[1:-2]]
    assert pieces == ["x"] * 5


async def test_embeddings_are_deterministic_unit_vectors(client):
    body = {"model": "echo", "input": ["same", "other", "same"], "dimensions": 8}
    with trio.fail_after(IO_TIMEOUT):
        r = await client.post("/v1/embeddings", json=body)
        b64 = await client.post("/v1/embeddings", json={**body, "encoding_format": "base64"})
    data = r.json()["data"]
    assert [d["index"] for d in data] == [0, 1, 2]
    vectors = [d["embedding"] for d in data]
    assert len(vectors[0]) == 8 and vectors[0] == vectors[2] != vectors[1]
    assert math.isclose(sum(v * v for v in vectors[1]), 1.0, rel_tol=1e-9)
    decoded = struct.unpack("<8f", base64.b64decode(b64.json()["data"][1]["embedding"]))
    assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(decoded, vectors[1], strict=True))
    assert r.json()["usage"]["prompt_tokens"] == 3


def test_openai_sdk_round_trip(echo):
    openai = pytest.importorskip("openai")
    sdk = openai.OpenAI(base_url=echo.url + "/v1", api_key="unused", timeout=IO_TIMEOUT)
    stream = sdk.chat.completions.create(model="echo", stream=True,
                                         messages=[{"role": "user", "content": "hi you"}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "hi you"
    vec = sdk.embeddings.create(model="echo", input="hi").data[0].embedding
    assert len(vec) == 64


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "needle"),
    [
        ("POST", "/v1/chat/completions", b'{"model": "echo", "messages": [', 400, "not valid JSON"),
        ("POST", "/v1/chat/completions", b"[1, 2]", 400, "must be a JSON object"),
        ("POST", "/v1/chat/completions", b'{"model": "echo"}', 400, "messages is required"),
        ("POST", "/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}]}',
         400, "model is required"),
        ("POST", "/v1/chat/completions", b'{"model": "echo", "messages": []}', 400, "must not be empty"),
        ("POST", "/v1/chat/completions", b'{"model": "echo", "messages": [{"content": "x"}]}',
         400, "role is required"),
        ("POST", "/v1/chat/completions",
         b'{"model": "echo", "messages": [{"role": "user", "content": 5}]}', 400, "content must be"),
        ("POST", "/v1/completions", b'{"model": "echo", "prompt": "x", "max_tokens": 0}',
         400, "max_tokens 0 is out of range"),
        ("POST", "/v1/completions", b'{"model": "echo", "prompt": "x", "stream": "yes"}',
         400, "stream must be a boolean"),
        ("POST", "/v1/completions", b'{"model": "echo", "prompt": "x", "n": 2}', 400, "n 2"),
        ("POST", "/v1/completions", b'{"model": "nope", "prompt": "x"}', 404, "'nope' does not exist"),
        ("POST", "/v1/embeddings", b'{"model": "echo", "input": [1.5]}', 400, "input[0]"),
        ("POST", "/v1/embeddings", b'{"model": "echo", "input": "x", "encoding_format": "hex"}',
         400, "encoding_format"),
        ("POST", "/v1/embeddings", b"\xff\xfe", 400, "not valid JSON"),
        ("GET", "/v1/chat/completions", b"", 405, "not allowed"),
        ("GET", "/v2/nothing", b"", 404, "no such endpoint"),
        ("POST", "/v1/embeddings", b"x" * (1024 * 1024 + 1), 413, "larger than"),
    ],
)
async def test_bad_requests_get_openai_errors(client, method, path, content, status, needle):
    with trio.fail_after(IO_TIMEOUT):
        r = await client.request(method, path, content=content)
    assert r.status_code == status
    error = r.json()["error"]
    assert needle in error["message"] and error["type"] and "code" in error


async def test_client_disconnect_stops_the_stream(client):
    body = chat_body("tick", stream=True, echo_tokens=10_000, echo_delay_s=0.01)
    with trio.fail_after(IO_TIMEOUT):
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            seen = 0
            async for line in r.aiter_lines():
                seen += line.startswith("data: ")
                if seen == 3:
                    # Asked before the break: once the loop is left, Trio may finalise the
                    # abandoned line iterator at any moment, which closes the connection.
                    busy = (await client.get("/health")).json()
                    break
        assert busy["active_requests"] == 1
        await wait_for_health(client, lambda b: b["active_requests"] == 0)


async def test_requests_beyond_max_concurrency_queue_and_finish(tmp_path):
    worker = await trio.to_thread.run_sync(partial(
        spawn_worker, ECHO, env={"ECHO_MAX_CONCURRENCY": "2", "ECHO_TOKEN_DELAY_S": "0.05"}))
    try:
        async with httpx.AsyncClient(base_url=worker.url, timeout=IO_TIMEOUT) as c:
            results = []

            async def one():
                r = await c.post("/v1/completions",
                                 json={"model": "echo", "prompt": "a b c d e f"})
                results.append(r.json()["choices"][0]["text"])

            with trio.fail_after(IO_TIMEOUT):
                async with trio.open_nursery() as nursery:
                    for _ in range(3):
                        nursery.start_soon(one)
                    busy = await wait_for_health(c, lambda b: b["queued_requests"] == 1)
                assert busy["max_concurrency"] == 2 and busy["active_requests"] == 2
            assert results == ["a b c d e f"] * 3
    finally:
        worker.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_starts_fast_on_the_given_port_and_exits_cleanly_on_sigterm():
    port = free_port()
    worker = spawn_worker(ECHO, env={"FLOWCTL_PORT": str(port)})
    try:
        assert worker.url == f"http://127.0.0.1:{port}"
        assert worker.started_in < 3.0, "start-up should take well under a second when idle"
        assert httpx.get(worker.url + "/health", timeout=IO_TIMEOUT).status_code == 200
        began = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(timeout=10) == 0
        assert time.monotonic() - began < 5.0
    finally:
        worker.stop()


def test_busy_port_and_bad_settings_fail_with_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = None
        try:
            with pytest.raises(Exception, match="cannot listen on 127.0.0.1"):
                worker = spawn_worker(ECHO, env={"FLOWCTL_PORT": str(port)})
        finally:
            if worker:
                worker.stop()
    with pytest.raises(Exception, match=r"exited \(2\).*bad environment setting"):
        spawn_worker(ECHO, env={"ECHO_MAX_CONCURRENCY": "zero"})


def test_echo_api_plan_keeps_text_joinable():
    import sys

    sys.path.insert(0, str(ECHO))
    try:
        from echo_api import Generation, plan
    finally:
        sys.path.remove(str(ECHO))
    gen = Generation(model="echo", prompts=(), prompt_tokens=0, max_tokens=None, stop=("lo   w",),
                     stream=False, include_usage=False, delay_s=None, tokens=None)
    assert plan("  hello   world ", gen) == (["  hel"], "stop")
    assert json.dumps(plan("", gen)) == '[[], "stop"]'


async def test_runs_from_an_install_without_service_json(tmp_path):
    for name in ("worker.py", "echo_api.py"):
        (tmp_path / name).write_bytes((ECHO / name).read_bytes())
    worker = await trio.to_thread.run_sync(spawn_worker, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=worker.url, timeout=IO_TIMEOUT) as c:
            with trio.fail_after(IO_TIMEOUT):
                models = (await c.get("/v1/models")).json()
        assert [m["id"] for m in models["data"]] == ["echo"]
    finally:
        worker.stop()


async def test_client_leaving_a_slow_unstreamed_request_frees_its_slot(client):
    body = chat_body("slow", echo_tokens=1000, echo_delay_s=0.01)  # ~10 s if not cancelled
    with trio.fail_after(IO_TIMEOUT):
        with trio.move_on_after(0.3):
            await client.post("/v1/chat/completions", json=body)
        await wait_for_health(client, lambda b: b["active_requests"] == 0, deadline_s=3)


async def test_sigterm_during_a_stream_drains_then_exits_zero():
    worker = await trio.to_thread.run_sync(spawn_worker, ECHO)
    try:
        body = chat_body("x", stream=True, echo_tokens=100_000, echo_delay_s=0.01)
        async with httpx.AsyncClient(base_url=worker.url, timeout=IO_TIMEOUT) as c:
            with trio.fail_after(IO_TIMEOUT):
                async with c.stream("POST", "/v1/chat/completions", json=body) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            break
                    began = time.monotonic()
                    worker.proc.send_signal(signal.SIGTERM)
                    code = await trio.to_thread.run_sync(worker.proc.wait)
        assert code == 0
        assert time.monotonic() - began < 2.0 + 3.0  # the grace period, then the stream is cut
    finally:
        worker.stop()
