"""examples/jobs/nightly-embed.toml end to end on a real plane and a real node, with the echo
model standing in for llama-chat's embedding model: the corpus command step's artifact is the
inference step's input, and the embeddings come back as its output.jsonl artifact."""

import json
import tomllib
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from runtime.plane import PlaneSettings, serve_control_plane
from tests.polling import wait_until
from tests.runtime.jobs.nodes import publish_echo, start_node

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "jobs" / "nightly-embed.toml"
ADMIN = "embed-example-admin"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
async def plane(nursery, tmp_path):
    settings = PlaneSettings(data_dir=tmp_path / "plane", port=0, roles=("hub", "scheduler", "gateway", "jobs"))
    with trio.fail_after(30):
        handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))
    async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
        await publish_echo(client, AUTH, tmp_path)
        await start_node(nursery, client, AUTH, handle.url, tmp_path / "node", "n1")
        r = await client.post("/api/deployments", headers=AUTH, json={"service": "echo", "replicas": 1})
        assert r.status_code == 201, r.text
        with trio.fail_after(60):
            await wait_until(lambda: bool(handle.scheduler.routes("echo")), interval=0.05)
        yield client


async def test_the_nightly_embedding_example_embeds_its_corpus(plane):
    doc = tomllib.loads(EXAMPLE.read_text())
    doc["steps"][1]["model"] = "echo"  # the echo worker embeds too; the example names gemma-3-270m-embedding
    r = await plane.post("/api/v1/jobs", headers=AUTH, json=doc)
    assert r.status_code in (200, 201), r.text
    r = await plane.post("/api/v1/jobs/nightly-embed/trigger", headers=AUTH, json={"parameters": {"limit": 4}})
    run_id = r.json()["run_id"]
    with trio.fail_after(60):
        while (run := (await plane.get(f"/api/v1/runs/{run_id}", headers=AUTH)).json())["state"] in (  # noqa: ASYNC110
                "pending", "running"):
            await trio.sleep(0.1)
    assert run["state"] == "succeeded", run
    embed = next(s for s in run["steps"] if s["step"] == "embed")
    assert embed["progress"] == {"done": 4, "failed": 0, "total": 4}
    r = await plane.get(f"/api/v1/runs/{run_id}/artifacts/embed/output.jsonl", headers=AUTH)
    assert r.status_code == 200, r.text
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert [row["custom_id"] for row in rows] == ["doc-0", "doc-1", "doc-2", "doc-3"]
    assert all(row["response"]["status_code"] == 200 for row in rows)
    assert len(rows[0]["response"]["body"]["data"][0]["embedding"]) == 64
