"""A Batch API batch of embeddings on the real Gemma 3 270M (llama-chat's embedding model), with
the official `openai` package (slow)."""

import io
import json
import math
import time
from functools import partial

import openai
import pytest
import trio

from tests.examples.llama_fakes import LLAMA_DIR
from tests.examples.test_llama_chat import _skip_reason
from tests.examples.workers import spawn_worker
from tests.runtime.jobs.batch_cluster import start_batch_cluster

pytestmark = [pytest.mark.slow, pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")]
MODELS = [{"model_id": "gemma-3-270m", "model_type": "chat", "version": "1.0.0", "path": "worker.py"},
          {"model_id": "gemma-3-270m-embedding", "model_type": "embedding", "version": "1.0.0", "path": "worker.py"}]
TEXTS = ["the cat sat on the mat", "a kitten rests on a rug", "quarterly tax filing deadlines"]


def _embed_batch(url: str, key: str) -> tuple:
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)
    try:
        data = b"".join(json.dumps({"custom_id": f"doc-{i}", "method": "POST", "url": "/v1/embeddings", "body": {
            "model": "gemma-3-270m-embedding", "input": text}}).encode() + b"\n" for i, text in enumerate(TEXTS))
        uploaded = client.files.create(file=("docs.jsonl", io.BytesIO(data)), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
        deadline = time.monotonic() + 240
        while (batch := client.batches.retrieve(batch.id)).status not in ("completed", "failed", "cancelled"):
            assert time.monotonic() < deadline, batch.status
            time.sleep(0.2)
        return batch, client.files.content(batch.output_file_id).text if batch.output_file_id else ""
    finally:
        client.close()


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


async def test_a_batch_embeds_documents_with_the_real_model(nursery, tmp_path):
    worker = await trio.to_thread.run_sync(partial(spawn_worker, LLAMA_DIR, env={
        "LLAMA_N_THREADS": "2", "LLAMA_N_CTX": "1024"}, timeout=120))
    try:
        cluster, _ = await start_batch_cluster(nursery, tmp_path, worker=worker, service="llama-chat", models=MODELS)
        key = await cluster.key()
        with trio.fail_after(300):
            batch, output = await trio.to_thread.run_sync(partial(_embed_batch, cluster.url, key))
        await cluster.client.aclose()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(worker.stop)
    assert batch.status == "completed" and batch.request_counts.completed == 3, batch
    rows = [json.loads(line) for line in output.splitlines()]
    assert [r["custom_id"] for r in rows] == ["doc-0", "doc-1", "doc-2"]
    vectors = [r["response"]["body"]["data"][0]["embedding"] for r in rows]
    assert len({len(v) for v in vectors}) == 1 and len(vectors[0]) >= 64
    assert _cosine(vectors[0], vectors[1]) > _cosine(vectors[0], vectors[2])  # the two about cats are closer
