"""The llama-chat worker on the real Gemma 3 270M model, as a subprocess over HTTP (slow)."""

from __future__ import annotations

import importlib.util
import json
import math

import httpx
import pytest
import trio

from tests.examples.llama_fakes import LLAMA_DIR
from tests.examples.workers import spawn_worker, sse_data, wait_for_health

MODEL = "gemma-3-270m"
IO_TIMEOUT = 60


def _skip_reason() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (pip install -e '.[llm]')"
    manifest = json.loads((LLAMA_DIR / "service.json").read_text())
    gguf = LLAMA_DIR / manifest["models"][0]["path"]
    if not gguf.is_file():
        return f"{gguf.relative_to(LLAMA_DIR.parents[1])} is missing (run `just llm-model`)"
    return None


pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")]


@pytest.fixture(scope="module")
def llama():
    """One worker (one model load) for this module; gone before other modules run."""
    worker = spawn_worker(LLAMA_DIR, env={"LLAMA_N_THREADS": "2", "LLAMA_N_CTX": "1024",
                                          "LLAMA_PARALLEL": "4", "LLAMA_CHUNK": "64"},
                          timeout=120)
    yield worker
    assert worker.stop() == 0, worker.stderr_text()


@pytest.fixture
async def client(llama):
    async with httpx.AsyncClient(base_url=llama.url, timeout=IO_TIMEOUT) as c:
        yield c


def completion(prompt="The capital of France is", **extra):
    return {"model": MODEL, "prompt": prompt, "max_tokens": 8, "temperature": 0, **extra}


async def test_health_and_models(client):
    with trio.fail_after(IO_TIMEOUT):
        health = (await client.get("/health")).json()
        models = (await client.get("/v1/models")).json()
    assert health["status"] == "ok" and health["max_concurrency"] == 4
    assert health["n_ctx_per_sequence"] == 1024 and health["kv_cache_tokens"] == 4096
    assert health["active_sequences"] == 0 and health["queued_sequences"] == 0
    assert [m["id"] for m in models["data"]] == [MODEL, "gemma-3-270m-embedding"]


async def test_greedy_completion_is_deterministic_with_usage(client):
    with trio.fail_after(IO_TIMEOUT):
        first = (await client.post("/v1/completions", json=completion())).json()
        second = (await client.post("/v1/completions", json=completion())).json()
    assert first["choices"][0]["text"] == second["choices"][0]["text"]
    assert "France" in first["choices"][0]["text"]  # " the capital of the country of France."
    assert first["usage"] == {"prompt_tokens": 6, "completion_tokens": 8, "total_tokens": 14,
                              "prompt_tokens_details": {"cached_tokens": 0}}
    # the same prompt again: all of it but the last token comes from the cache
    assert second["usage"]["prompt_tokens_details"] == {"cached_tokens": 5}
    assert first["choices"][0]["finish_reason"] == "length"


async def test_seed_makes_sampling_repeatable_and_stop_cuts(client):
    body = completion(temperature=0.9, top_p=0.9, seed=42, max_tokens=12)
    with trio.fail_after(IO_TIMEOUT):
        a = (await client.post("/v1/completions", json=body)).json()["choices"][0]["text"]
        b = (await client.post("/v1/completions", json=body)).json()["choices"][0]["text"]
        cut = (await client.post("/v1/completions",
                                 json=completion(max_tokens=20, stop=["France"]))).json()
    assert a == b
    assert cut["choices"][0]["text"] == " the capital of the country of "
    assert cut["choices"][0]["finish_reason"] == "stop"


async def test_chat_stream_in_gemma_turns(client):
    body = {"model": MODEL, "max_tokens": 6, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "system", "content": "Answer briefly."},
                         {"role": "user", "content": "What is the capital of France?"}]}
    with trio.fail_after(IO_TIMEOUT):
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            events = await sse_data(r.aiter_lines())
    assert events[-1] == "[DONE]"
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"])
    assert text.strip()
    assert events[-2]["usage"]["completion_tokens"] == 6
    assert events[-2]["usage"]["prompt_tokens"] > 10


async def test_embeddings_are_normalized_and_meaningful(client):
    body = {"model": "gemma-3-270m-embedding",
            "input": ["The cat sat on the mat.", "A cat is sitting on a mat.", "Stock prices fell."]}
    with trio.fail_after(IO_TIMEOUT):
        r = await client.post("/v1/embeddings", json=body)
    assert r.status_code == 200
    vectors = [d["embedding"] for d in r.json()["data"]]
    assert len(vectors) == 3 and len(vectors[0]) == 640
    assert math.isclose(sum(v * v for v in vectors[0]), 1.0, rel_tol=1e-4)
    cos = [sum(a * b for a, b in zip(vectors[0], v, strict=True)) for v in vectors[1:]]
    assert cos[0] > cos[1]
    assert r.json()["usage"]["prompt_tokens"] > 10


async def test_cancel_mid_stream_frees_the_model_within_a_token(client):
    body = completion(max_tokens=900, stream=True)
    with trio.fail_after(IO_TIMEOUT):
        before = (await client.get("/health")).json()["tokens_generated"]
        async with client.stream("POST", "/v1/completions", json=body) as r:
            seen = 0
            async for line in r.aiter_lines():
                seen += line.startswith("data: ")
                if seen == 3:
                    break
        idle = await wait_for_health(client, lambda b: b["active_requests"] == 0, deadline_s=2)
    # Stopped about when the client left (a token takes 15-40 ms here), not after 900 tokens.
    assert idle["tokens_generated"] - before < 100
    with trio.fail_after(IO_TIMEOUT):
        r = await client.post("/v1/completions", json=completion())
    assert r.status_code == 200


async def test_concurrent_requests_decode_together_and_the_fifth_queues(client):
    texts = []

    async def one(i):
        r = await client.post("/v1/completions", json=completion(max_tokens=30 + i))
        texts.append((i, r.json()["usage"]["completion_tokens"]))

    with trio.fail_after(IO_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(one, i)
            # four decode together (max_concurrency), the fifth waits for one of them
            await wait_for_health(client, lambda b: b["active_sequences"] == 4
                                  and b["queued_sequences"] == 1,
                                  deadline_s=IO_TIMEOUT, interval_s=0.005)
    assert sorted(texts) == [(i, 30 + i) for i in range(5)]


@pytest.mark.parametrize(("path", "body", "status", "code"), [
    ("/v1/completions", b"{", 400, "invalid_json"),
    ("/v1/completions", json.dumps({"model": MODEL}).encode(), 400, "missing_required_parameter"),
    ("/v1/completions", json.dumps(completion(max_tokens=-1)).encode(), 400, "invalid_value"),
    ("/v1/chat/completions", json.dumps({"model": MODEL, "messages": "hi"}).encode(), 400,
     "invalid_value"),
    ("/v1/completions", json.dumps(completion(prompt="word " * 1200)).encode(), 400,
     "context_length_exceeded"),
    ("/v1/embeddings", json.dumps({"model": MODEL, "input": []}).encode(), 400, "invalid_value"),
    ("/v1/completions", json.dumps(completion(model="gpt-4")).encode(), 404, "model_not_found"),
])
async def test_malformed_requests_get_4xx(client, path, body, status, code):
    with trio.fail_after(IO_TIMEOUT):
        r = await client.post(path, content=body)
    assert r.status_code == status
    assert r.json()["error"]["code"] == code
