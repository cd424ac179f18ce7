"""The llama-chat engine and HTTP layer on a fake model: threads, channels, cancellation, queueing."""

from __future__ import annotations

import threading
from functools import partial

import httpx
import pytest
import trio
import trio.testing

from tests.examples.llama_fakes import FakeBackend, import_llama_module
from tests.examples.workers import sse_data, wait_for_health

engine_mod = import_llama_module("llama_engine")
gemma = import_llama_module("gemma_turns")
Engine, Finished, Sampling = engine_mod.Engine, engine_mod.Finished, engine_mod.Sampling
IO_TIMEOUT = 10


async def collect(engine, tokens, sampling):
    pieces = []
    async with engine.open_stream(tokens, sampling) as items:
        async for item in items:
            pieces.append(item)
    return pieces


async def test_stream_yields_pieces_then_finished_with_usage():
    engine = Engine(FakeBackend([" a", " b"]))
    with trio.fail_after(IO_TIMEOUT):
        items = await collect(engine, [1, 2, 3], Sampling(max_tokens=3))
    assert items == [" a", " b", " a", Finished("length", 3, 3)]
    assert engine.tokens_generated == 3 and engine.active_requests == 0


async def test_end_token_finishes_with_stop():
    engine = Engine(FakeBackend(["x"], end_after=2))
    with trio.fail_after(IO_TIMEOUT):
        items = await collect(engine, [1], Sampling(max_tokens=50))
    assert items == ["x", "x", Finished("stop", 1, 2)]


async def test_generation_runs_off_the_event_loop_thread():
    backend = FakeBackend(["x"])
    with trio.fail_after(IO_TIMEOUT):
        await collect(Engine(backend), [1], Sampling(max_tokens=2))
    assert threading.get_ident() not in backend.threads


async def test_stop_sequence_split_across_tokens_is_cut_and_held_back():
    engine = Engine(FakeBackend(["Hel", "lo W", "orld"]))
    with trio.fail_after(IO_TIMEOUT):
        items = await collect(engine, [1], Sampling(max_tokens=10, stop=("o Wo",)))
    assert "".join(i for i in items if isinstance(i, str)) == "Hell"
    assert items[-1].finish_reason == "stop"


async def test_utf8_split_across_tokens_arrives_whole():
    engine = Engine(FakeBackend([b"\xc3", b"\xa9"]))
    with trio.fail_after(IO_TIMEOUT):
        items = await collect(engine, [1], Sampling(max_tokens=4))
    assert items[:-1] == ["é", "é"]


async def test_context_window_caps_max_tokens_and_rejects_full_prompts():
    engine = Engine(FakeBackend(["x"], n_ctx=5))
    with trio.fail_after(IO_TIMEOUT):
        items = await collect(engine, [1, 2, 3], Sampling(max_tokens=100))
    assert items[-1] == Finished("length", 3, 2)
    with pytest.raises(engine_mod.ContextTooLong, match="5"):
        await collect(engine, [1, 2, 3, 4, 5], Sampling())


async def test_leaving_the_stream_stops_generation_within_one_token():
    backend = FakeBackend(["x"], token_s=0.002)
    engine = Engine(backend)
    with trio.fail_after(IO_TIMEOUT):
        async with engine.open_stream([1], Sampling(max_tokens=100_000)) as items:
            for _ in range(3):
                await items.receive()
            at_exit = backend.sampled
        # The thread checks the flag before each token: besides the token in progress when
        # the flag was set, at most one may finish between reading the counter and setting it.
        assert backend.sampled <= at_exit + 2
        assert engine.active_requests == 0 and backend.concurrent == 0


async def test_cancelling_the_consumer_stops_generation():
    backend = FakeBackend(["x"], token_s=0.002)
    engine = Engine(backend)
    with trio.fail_after(IO_TIMEOUT):
        with trio.CancelScope() as scope:
            async with engine.open_stream([1], Sampling(max_tokens=100_000)) as items:
                await items.receive()
                scope.cancel()
                await items.receive()
        assert scope.cancelled_caught
        assert backend.concurrent == 0 and engine.active_requests == 0
        assert backend.sampled < 1000


async def test_concurrent_requests_queue_and_all_finish():
    backend = FakeBackend(["x"], token_s=0.001)
    engine = Engine(backend)
    results = []

    async def one():
        results.append(await collect(engine, [1], Sampling(max_tokens=20)))

    with trio.fail_after(IO_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(one)
            await trio.testing.wait_all_tasks_blocked()
            assert engine.active_requests == 1 and engine.queued_requests == 2
    assert len(results) == 3 and all(r[-1] == Finished("length", 1, 20) for r in results)
    assert backend.max_concurrent == 1


def test_gemma_turns_put_system_text_in_the_first_user_turn():
    segments = gemma.chat_segments([("system", "Be brief."), ("user", "Hi"),
                                    ("assistant", "Hello."), ("user", "<start_of_turn>?")])
    assert gemma.render(segments) == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\n<start_of_turn>?<end_of_turn>\n"
        "<start_of_turn>model\n")
    assert ("<start_of_turn>?", False) in segments  # user text is never parsed as markup
    with pytest.raises(gemma.BadMessages, match="'tool'"):
        gemma.chat_segments([("tool", "x")])


@pytest.fixture
async def fake_server(nursery):
    """The real quart-trio app and hypercorn on port 0, over a slow fake model."""
    from hypercorn.config import Config
    from hypercorn.trio import serve

    app_mod = import_llama_module("llama_app")
    backend = FakeBackend([" tok"], token_s=0.002)
    engine = Engine(backend)
    app = app_mod.create_app(engine, ("fake",), device="cpu")
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.loglevel = "WARNING"
    shutdown = trio.Event()
    binds = await nursery.start(partial(serve, app, config, shutdown_trigger=shutdown.wait))
    async with httpx.AsyncClient(base_url=binds[0], timeout=IO_TIMEOUT) as client:
        yield client, engine, backend
    shutdown.set()


async def test_http_stream_and_disconnect_on_fake_model(fake_server):
    client, engine, backend = fake_server
    body = {"model": "fake", "prompt": "x", "max_tokens": 3, "stream": True,
            "stream_options": {"include_usage": True}}
    with trio.fail_after(IO_TIMEOUT):
        async with client.stream("POST", "/v1/completions", json=body) as r:
            events = await sse_data(r.aiter_lines())
        assert [e["choices"][0]["text"] for e in events[:3]] == [" tok"] * 3
        assert events[-2]["usage"]["completion_tokens"] == 3 and events[-1] == "[DONE]"

        long = {**body, "max_tokens": 100_000}
        async with client.stream("POST", "/v1/chat/completions",
                                 json={**long, "messages": [{"role": "user", "content": "x"}]}) as r:
            async for line in r.aiter_lines():
                if '"content": " tok"' in line:
                    break
        await wait_for_health(client, lambda b: b["active_requests"] == 0)
        assert backend.concurrent == 0 and backend.sampled < 10_000


async def test_http_errors_on_fake_model(fake_server):
    client, _, _ = fake_server
    with trio.fail_after(IO_TIMEOUT):
        r = await client.post("/v1/chat/completions", content=b"{nope")
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
        r = await client.post("/v1/completions", json={"model": "fake", "prompt": "x" * 5000})
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
        r = await client.post("/v1/completions", json={"model": "other", "prompt": "x"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        r = await client.post("/v1/chat/completions", json={
            "model": "fake", "messages": [{"role": "tool", "content": "x"}]})
        assert r.status_code == 400 and "'tool'" in r.json()["error"]["message"]
        r = await client.post("/v1/embeddings", content=b"x" * (1024 * 1024 + 10))
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_worker_settings_from_service_json_env_and_defaults(tmp_path, monkeypatch):
    worker = import_llama_module("worker")
    monkeypatch.setenv("MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("LLAMA_N_THREADS", "3")
    monkeypatch.setenv("FLOWCTL_PORT", "0")
    shipped = worker.load_settings()
    assert shipped.models == ("gemma-3-270m", "gemma-3-270m-embedding")
    assert shipped.llama.model_path == tmp_path / "gemma-3-270m-q4_k_m.gguf"
    assert shipped.llama.n_threads == 3 and shipped.port == 0
    # unpack_bundle does not write service.json into the install; the defaults match it
    assert worker.load_settings(tmp_path / "service.json") == shipped
    monkeypatch.setenv("LLAMA_N_CTX", "lots")
    with pytest.raises(worker.BadSetting, match="LLAMA_N_CTX='lots' is not an integer"):
        worker.load_settings()
