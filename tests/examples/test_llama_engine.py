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
from tests.polling import wait_until

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


def text_of(items):
    return "".join(i for i in items if isinstance(i, str))


@pytest.fixture
def make_engine():
    """Engines whose decode threads are stopped when the test ends."""
    engines = []

    def make(backend):
        engines.append(Engine(backend))
        return engines[-1]

    yield make
    for engine in engines:
        engine.close()
        assert not engine.batcher._thread.is_alive()


async def test_stream_yields_pieces_then_finished_with_usage(make_engine):
    engine = make_engine(FakeBackend([" a", " b"]))
    with trio.fail_after(IO_TIMEOUT):
        items = await collect(engine, [1, 2, 3], Sampling(max_tokens=3))
    assert items == [" a", " b", " a", Finished("length", 3, 3)]
    assert engine.tokens_generated == 3 and engine.active_requests == 0


async def test_end_token_finishes_with_stop(make_engine):
    engine = make_engine(FakeBackend(["x"], end_after=2))
    with trio.fail_after(IO_TIMEOUT):
        items = await collect(engine, [1], Sampling(max_tokens=50))
    assert items == ["x", "x", Finished("stop", 1, 2)]


async def test_generation_runs_off_the_event_loop_thread(make_engine):
    backend = FakeBackend(["x"])
    with trio.fail_after(IO_TIMEOUT):
        await collect(make_engine(backend), [1], Sampling(max_tokens=2))
    assert backend.threads and threading.get_ident() not in backend.threads


async def test_stop_sequence_split_across_tokens_is_cut_and_held_back(make_engine):
    engine = make_engine(FakeBackend(["Hel", "lo W", "orld"]))
    with trio.fail_after(IO_TIMEOUT):
        items = await collect(engine, [1], Sampling(max_tokens=10, stop=("o Wo",)))
    assert text_of(items) == "Hell"
    assert items[-1].finish_reason == "stop"


async def test_utf8_split_across_tokens_arrives_whole(make_engine):
    engine = make_engine(FakeBackend([b"\xc3", b"\xa9"]))
    with trio.fail_after(IO_TIMEOUT):
        items = await collect(engine, [1], Sampling(max_tokens=4))
    assert items[:-1] == ["é", "é"]


async def test_context_window_caps_max_tokens_and_rejects_full_prompts(make_engine):
    engine = make_engine(FakeBackend(["x"], n_ctx=5))
    with trio.fail_after(IO_TIMEOUT):
        items = await collect(engine, [1, 2, 3], Sampling(max_tokens=100))
    assert items[-1] == Finished("length", 3, 2)
    with pytest.raises(engine_mod.ContextTooLong, match="5"):
        await collect(engine, [1, 2, 3, 4, 5], Sampling())


async def test_leaving_the_stream_frees_the_sequence_at_the_next_step(make_engine):
    backend = FakeBackend(["x"], token_s=0.002)
    engine = make_engine(backend)
    with trio.fail_after(IO_TIMEOUT):
        async with engine.open_stream([1], Sampling(max_tokens=100_000)) as items:
            for _ in range(3):
                await items.receive()
            at_exit = backend.sampled
        # The block exits once the loop dropped the sequence: it samples at most the step
        # in progress and the one it was building when the cancel arrived.
        assert backend.sampled <= at_exit + 2
        assert engine.active_requests == 0 and backend.samplers_alive == 0


async def test_cancelling_the_consumer_stops_generation(make_engine):
    backend = FakeBackend(["x"], token_s=0.002)
    engine = make_engine(backend)
    with trio.fail_after(IO_TIMEOUT):
        with trio.CancelScope() as scope:
            async with engine.open_stream([1], Sampling(max_tokens=100_000)) as items:
                await items.receive()
                scope.cancel()
                await items.receive()
        assert scope.cancelled_caught
        assert backend.samplers_alive == 0 and engine.active_requests == 0
        assert backend.sampled < 1000


async def test_concurrent_requests_decode_together_up_to_max_concurrency(make_engine):
    backend = FakeBackend(["x"], token_s=0.001, parallel=2)
    engine = make_engine(backend)
    results = []

    async def one(i):
        results.append(await collect(engine, [1, 2 + i], Sampling(max_tokens=20)))

    with trio.fail_after(IO_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(one, i)
            await wait_until(lambda: (engine.active_requests, engine.queued_requests) == (2, 1),
                             interval=0.0005)
    assert engine.max_concurrency == 2
    assert len(results) == 3 and all(r[-1].completion_tokens == 20 for r in results)
    assert backend.max_sequences_per_decode() == 2


async def test_cancelling_one_of_eight_leaves_the_others_whole(make_engine):
    backend = FakeBackend(["x"], token_s=0.001, parallel=8)
    engine = make_engine(backend)
    done = {}

    async def one(i, scope=None):
        items = []
        async with engine.open_stream([1, 100 + i], Sampling(max_tokens=40)) as stream:
            async for item in stream:
                items.append(item)
                if scope is not None and len(items) == 5:
                    scope.cancel()
        done[i] = items

    with trio.fail_after(IO_TIMEOUT):
        async with trio.open_nursery() as nursery:
            cancel = trio.CancelScope()
            for i in range(1, 8):
                nursery.start_soon(one, i)

            async def cancelled():
                with cancel:
                    await one(0, cancel)
            nursery.start_soon(cancelled)
    assert 0 not in done
    assert all(done[i] == ["x"] * 40 + [Finished("length", 2, 40)] for i in range(1, 8))
    assert backend.max_sequences_per_decode() == 8 and backend.samplers_alive == 0


async def test_a_long_prompt_is_read_in_chunks_while_others_stream(make_engine):
    backend = FakeBackend(["x"], token_s=0.001, parallel=4, chunk=16)
    engine = make_engine(backend)
    with trio.fail_after(IO_TIMEOUT):
        async with engine.open_stream([1, 2], Sampling(max_tokens=1000)) as running:
            await running.receive()
            long = list(range(3, 103))  # 100 tokens: 7 chunks of at most 16
            items = await collect(engine, long, Sampling(max_tokens=2))
            assert items[-1] == Finished("length", 100, 2)
    running_seq = backend.batches[0][0][2]
    long_seq = next(seq for b in backend.batches for _, _, seq in b if seq != running_seq)
    reading = [b for b in backend.batches if any(seq == long_seq and pos < 100 for _, pos, seq in b)]
    assert len(reading) == 7
    # every step that read a chunk of the long prompt also gave the running stream a token
    assert all(sum(seq == running_seq for _, _, seq in b) == 1 for b in reading)
    assert all(sum(seq == long_seq for _, _, seq in b) <= 16 for b in reading)


async def test_a_prompt_extending_a_finished_one_evaluates_only_its_suffix(make_engine):
    backend = FakeBackend(["y"], parallel=2)
    engine = make_engine(backend)
    with trio.fail_after(IO_TIMEOUT):
        first = await collect(engine, [1, 5, 6, 7], Sampling(max_tokens=3))
        # the next turn: the prompt, what was generated, and more
        before = len(backend.batches)
        second = await collect(engine, [1, 5, 6, 7, 1000, 1000, 1000, 8, 9], Sampling(max_tokens=2))
    assert first[-1].cached_tokens == 0
    # 1000 x3 were sampled but only two were fed back (the last one never is): 6 reused
    assert second[-1] == Finished("length", 9, 2, 6)
    read = [pos for _, pos, _ in backend.batches[before]]
    assert read == [6, 7, 8]
    cold = await collect(engine, [1, 9, 9], Sampling(max_tokens=1))
    assert cold[-1].cached_tokens == 0


async def test_idle_caches_are_evicted_least_recently_used_under_the_budget(make_engine):
    # 40 cells: one request reserves prompt + max_tokens = 20; two caches of 10 fit beside it
    backend = FakeBackend(["y"], parallel=1, n_seq=4, kv_tokens=40, n_ctx=40)
    engine = make_engine(backend)
    a, b, c = [1, 11, 12, 13, 14, 15], [1, 21, 22, 23, 24, 25], [1, 31, 32, 33, 34, 35]
    sampling = Sampling(max_tokens=14)
    with trio.fail_after(IO_TIMEOUT):
        for prompt in (a, b):
            await collect(engine, prompt, Sampling(max_tokens=5))
        cache = engine.batcher.cache
        assert cache.cached_sequences == 2 and cache.cached_tokens == 20
        await collect(engine, c, sampling)  # needs 20 cells: 40 - 20 cached = 20, fits
        assert cache.evictions == 0
        again_b = await collect(engine, b, sampling)  # b reuses its cache
        assert again_b[-1].cached_tokens == 5
        assert cache.evictions == 1  # a, the least recently used, made room
        again_a = await collect(engine, a, sampling)
        assert again_a[-1].cached_tokens == 0


async def test_embeddings_wait_their_turn(make_engine):
    engine = make_engine(FakeBackend(["x"]))
    with trio.fail_after(IO_TIMEOUT):
        vectors, count = await engine.embed(["ab", "c"])
    assert vectors == [[1.0, 0.0], [1.0, 0.0]] and count == 3


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
    engine.close()


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
        assert backend.samplers_alive == 0 and backend.sampled < 10_000


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
