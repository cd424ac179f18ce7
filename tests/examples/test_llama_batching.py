"""Continuous batching and prompt-cache reuse on the real Gemma 3 270M, in process (slow).

One model load for the module: a LlamaBackend with 8 sequences, a 32-token prompt chunk and
room for a few cached conversations, driven through the Engine exactly as the worker's
HTTP layer drives it.
"""

from __future__ import annotations

import pytest
import trio

from tests.examples.llama_fakes import import_llama_module
from tests.examples.test_llama_chat import _skip_reason
from tests.polling import wait_until

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")]

TIMEOUT = 300
PROMPTS = ["The capital of France is", "Water boils at", "The first president of the United States was",
           "The largest planet in the solar system is", "Paris is the capital of",
           "The chemical symbol for gold is", "One plus one equals", "The sun rises in the"]


@pytest.fixture(scope="module")
def backend():
    backend_mod = import_llama_module("llama_backend")
    worker = import_llama_module("worker")
    settings = worker.load_settings().llama
    import dataclasses

    real = backend_mod.LlamaBackend(dataclasses.replace(
        settings, n_ctx=512, n_threads=1, parallel=8, chunk=32, kv_tokens=8 * 512, cache_seqs=12))
    yield real
    real.close()


@pytest.fixture
def engine(backend):
    engine_mod = import_llama_module("llama_engine")
    with engine_mod.Engine(backend) as engine:
        yield engine
    for seq in range(backend.n_seq):  # the next test starts with a cold cache
        backend.forget(seq, 0)


def sampling(**kw):
    return import_llama_module("llama_types").Sampling(**{"max_tokens": 8, "temperature": 0.0, **kw})


async def complete(engine, prompt, s, *, on_piece=None):
    tokens = engine.backend.tokenize(prompt, bos=True, special=True)
    pieces = []
    async with engine.open_stream(tokens, s) as items:
        async for item in items:
            if isinstance(item, str):
                pieces.append(item)
                if on_piece is not None:
                    on_piece(len(pieces))
            else:
                return "".join(pieces), item
    raise AssertionError("no Finished item")


async def together(engine, jobs):
    """Run (prompt, sampling) jobs at once; their (text, finished) in order."""
    out = [None] * len(jobs)

    async def one(i, prompt, s):
        out[i] = await complete(engine, prompt, s)

    async with trio.open_nursery() as nursery:
        for i, (prompt, s) in enumerate(jobs):
            nursery.start_soon(one, i, prompt, s)
    return out


async def alone_then_together(engine, jobs):
    """Each (prompt, sampling) job run alone, then all at once; both from an empty cache."""
    alone = []
    for prompt, s in jobs:
        engine.batcher.cache.clear()
        alone.append(await complete(engine, prompt, s))
    engine.batcher.cache.clear()
    return alone, await together(engine, jobs)


async def test_a_greedy_stream_does_not_depend_on_the_rest_of_the_batch(engine):
    # Deterministic mode (the default): a KV stream per sequence, no repacked weights, every
    # ubatch two rows or wider (llama_ubatch.py). "The capital of France is" alone and beside
    # seven others parted ways at its 11th token before, hence 14 tokens.
    jobs = [(p, sampling(max_tokens=14)) for p in PROMPTS]
    with trio.fail_after(TIMEOUT):
        alone, batched = await alone_then_together(engine, jobs)
        # and among other batch-mates, the first prompt's stream finishing at another step
        engine.batcher.cache.clear()
        mixed = await together(engine, [(PROMPTS[0], sampling(max_tokens=14))]
                               + [(p, sampling(max_tokens=3 + i)) for i, p in enumerate(PROMPTS[4:])])
    assert [t for t, _ in alone] == [t for t, _ in batched]
    assert mixed[0][0] == alone[0][0]
    assert "Paris" in alone[0][0] or "France" in alone[0][0]


async def test_a_seeded_sample_does_not_depend_on_the_rest_of_the_batch(engine):
    seeded = sampling(temperature=0.9, top_p=0.95, seed=1234, max_tokens=12)
    with trio.fail_after(TIMEOUT):
        engine.batcher.cache.clear()
        alone = await complete(engine, PROMPTS[1], seeded)
        engine.batcher.cache.clear()
        a = await together(engine, [(PROMPTS[1], seeded)] + [(p, sampling()) for p in PROMPTS[2:5]])
        engine.batcher.cache.clear()
        b = await together(engine, [(p, sampling()) for p in PROMPTS[5:]] + [(PROMPTS[1], seeded)])
    assert a[0][0] == alone[0] and b[-1][0] == alone[0]


async def test_a_fixed_seed_gives_the_same_sample_and_another_seed_another(engine):
    def seeded(seed):
        return sampling(temperature=1.0, top_p=1.0, seed=seed, max_tokens=12)

    with trio.fail_after(TIMEOUT):
        first = await together(engine, [(PROMPTS[3], seeded(seed)) for seed in (1, 2, 3, 4)])
        engine.batcher.cache.clear()
        again = await together(engine, [(PROMPTS[3], seeded(seed)) for seed in (4, 3, 2, 1)])
    assert [t for t, _ in first] == [t for t, _ in again][::-1]
    assert len({t for t, _ in first}) > 1


async def test_cancelling_one_of_eight_streams_leaves_the_others_whole(engine):
    with trio.fail_after(TIMEOUT):
        out = {}

        async def cancelled():
            with trio.CancelScope() as scope:
                await complete(engine, PROMPTS[0], sampling(max_tokens=400),
                               on_piece=lambda n: n == 2 and scope.cancel())
            out["cancelled"] = scope.cancelled_caught

        async def rest():
            out["rest"] = await together(engine, [(p, sampling(max_tokens=12)) for p in PROMPTS[1:]])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancelled)
            nursery.start_soon(rest)
    assert out["cancelled"] is True
    assert all(f.completion_tokens == 12 and f.finish_reason == "length" and t.strip()
               for t, f in out["rest"])
    assert engine.active_requests == 0 and engine.batcher.cache.reserved == 0


async def test_a_prompt_longer_than_the_chunk_is_admitted_while_others_stream(engine):
    long_prompt = " ".join(["The history of the city goes back many centuries."] * 12)
    n_long = len(engine.backend.tokenize(long_prompt, bos=True))
    chunks = -(-n_long // engine.backend.chunk)
    assert chunks >= 4
    seen = {"stream": 0}
    marks = {}
    with trio.fail_after(TIMEOUT):
        async def stream():
            def piece(n):
                seen["stream"] = n
            seen["done"] = await complete(engine, PROMPTS[0], sampling(max_tokens=60), on_piece=piece)

        async def long():
            marks["sent"] = seen["stream"]

            def piece(n):
                marks.setdefault("first", seen["stream"])
            marks["done"] = await complete(engine, long_prompt, sampling(max_tokens=4), on_piece=piece)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream)
            await wait_until(lambda: seen["stream"] >= 3)
            nursery.start_soon(long)
    assert seen["done"][1].completion_tokens == 60
    assert marks["done"][1].completion_tokens == 4 and marks["done"][1].prompt_tokens == n_long
    # while the long prompt was read, chunk by chunk, the stream got a token every step
    assert marks["first"] - marks["sent"] >= chunks - 1


async def test_cache_reuse_gives_the_cold_output_and_reads_only_the_suffix(engine):
    turn1 = "<start_of_turn>user\nName a colour.<end_of_turn>\n<start_of_turn>model\n"
    with trio.fail_after(TIMEOUT):
        reply, first = await complete(engine, turn1, sampling(max_tokens=12))
        turn2 = turn1 + reply + "<end_of_turn>\n<start_of_turn>user\nAnd another?<end_of_turn>\n<start_of_turn>model\n"
        warm, warm_done = await complete(engine, turn2, sampling(max_tokens=12))
        engine.close()
        for seq in range(engine.backend.n_seq):
            engine.backend.forget(seq, 0)
        with import_llama_module("llama_engine").Engine(engine.backend) as fresh:
            cold, cold_done = await complete(fresh, turn2, sampling(max_tokens=12))
    assert first.cached_tokens == 0 and cold_done.cached_tokens == 0
    assert warm_done.cached_tokens >= first.prompt_tokens
    assert warm == cold


async def test_idle_caches_are_evicted_least_recently_used_under_the_budget(backend):
    import dataclasses

    backend_mod = import_llama_module("llama_backend")
    engine_mod = import_llama_module("llama_engine")
    # 160 cells: a running request reserves 64 (prompt and completion), and two finished
    # ones keep about 63 each, so the third request needs the first one's cells (in
    # deterministic mode: room for two streams of 64, so the third takes the first's stream)
    small = backend_mod.LlamaBackend(dataclasses.replace(
        backend.settings, n_ctx=64, parallel=1, chunk=32, kv_tokens=160, cache_seqs=4))
    prompts = [f"Fact number {i}: the river is long and the mountain is high." for i in range(3)]
    try:
        with engine_mod.Engine(small) as engine, trio.fail_after(TIMEOUT):
            cold = [await complete(engine, p, sampling(max_tokens=48)) for p in prompts]
            cache = engine.batcher.cache
            assert cache.evictions >= 1  # the third needed the first one's cells
            again = [await complete(engine, p, sampling(max_tokens=48)) for p in prompts[::-1]]
    finally:
        small.close()
    assert all(f.cached_tokens == 0 for _, f in cold)
    assert again[0][1].cached_tokens > 0  # the most recently used one was kept
    assert again[2][1].cached_tokens < again[0][1].cached_tokens  # the first one was not
    assert cache.cached_tokens <= 160
