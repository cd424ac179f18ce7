"""examples/jobs/ applied to a real plane: the parameterised command job, the chain, the webhook job
(and the nightly embedding job validated here; test_embed_example.py runs it with echo standing
in for the llama-chat model)."""

import json
import time
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from runtime.jobs.apply import load_definitions
from runtime.jobs.webhooks import sign
from runtime.plane import PlaneSettings, serve_control_plane
from tests.runtime.jobs.nodes import publish_echo, start_node

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "jobs"
ADMIN = "jobs-examples-admin"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
SECRET = "example-push-secret"


@pytest.fixture
async def plane(nursery, tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWCTL_WEBHOOK_SECRET_GIT_PUSH", SECRET)
    settings = PlaneSettings(data_dir=tmp_path / "plane", port=0, roles=("hub", "scheduler", "jobs"))
    with trio.fail_after(30):
        handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))
    async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
        await publish_echo(client, AUTH, tmp_path)  # steps run in its environment, on a node
        await start_node(nursery, client, AUTH, handle.url, tmp_path / "node", "n1")
        files = [{"name": p.name, "text": p.read_text()} for p in sorted(EXAMPLES.iterdir())
                 if p.suffix in (".toml", ".yaml")]
        r = await client.post("/api/v1/jobs/apply", headers=AUTH, json={"files": files})
        assert r.status_code == 200, r.text
        assert sorted(c["name"] for c in r.json()["changes"]) == ["chain-build", "chain-publish", "greet",
                                                                 "nightly-embed", "on-push"]
        yield client, tmp_path / "node"


async def ended(client, run_id):
    with trio.fail_after(20):
        while True:
            run = (await client.get(f"/api/v1/runs/{run_id}", headers=AUTH)).json()
            if run["state"] not in ("pending", "running"):
                return run
            await trio.sleep(0.05)


async def first_run(client, job):
    """The first run of `job` once there is one."""
    with trio.fail_after(20):
        while True:
            runs = (await client.get(f"/api/v1/runs?job={job}", headers=AUTH)).json()["runs"]
            if runs:
                return runs[-1]
            await trio.sleep(0.05)


def test_every_example_is_valid():
    specs = {spec.name: spec for spec in load_definitions(EXAMPLES)}
    assert len(specs) == 5
    embed = specs["nightly-embed"].step("embed")
    assert embed.kind == "inference" and embed.input.artifact == "corpus:corpus.jsonl"
    assert embed.model == "gemma-3-270m-embedding" and embed.endpoint == "/v1/embeddings"


async def test_greet_runs_with_its_parameter_and_leaves_an_output_file(plane):
    client, data = plane
    r = await client.post("/api/v1/jobs/greet/trigger", headers=AUTH, json={"parameters": {"who": "ada", "times": 2}})
    run = await ended(client, r.json()["run_id"])
    assert run["state"] == "succeeded", run
    logs = (await client.get(f"/api/v1/runs/{run['run_id']}/logs", headers=AUTH)).text
    assert "hello ada (1)\nhello ada (2)\n" in logs
    [output] = data.glob(f"**/jobs/{run['run_id']}/greet.1/output/greeting.txt")  # on the node that ran it
    assert output.read_text() == "greeted ada\n"


async def test_chain_publish_runs_after_chain_build_succeeds(plane):
    client, _ = plane
    r = await client.post("/api/v1/jobs/chain-build/trigger", headers=AUTH)
    assert (await ended(client, r.json()["run_id"]))["state"] == "succeeded"

    run = await ended(client, (await first_run(client, "chain-publish"))["run_id"])
    assert run["state"] == "succeeded" and run["cause"] == "event:job_run_finished"


async def test_on_push_runs_both_steps_on_a_signed_call(plane):
    client, _ = plane
    body = json.dumps({"parameters": {"ref": "feature-x"}}).encode()
    now = int(time.time())
    r = await client.post("/api/v1/hooks/default/on-push", content=body, headers={
        "X-Flowctl-Timestamp": str(now), "X-Flowctl-Signature": sign(SECRET.encode(), now, body)})
    assert r.status_code == 202, r.text
    run = await ended(client, r.json()["run_id"])
    assert run["state"] == "succeeded" and [s["step"] for s in run["steps"]] == ["checkout", "test"]
    logs = (await client.get(f"/api/v1/runs/{run['run_id']}/logs?step=test", headers=AUTH)).text
    assert "testing feature-x" in logs
    unsigned = await client.post("/api/v1/hooks/default/on-push", content=body)
    assert unsigned.status_code == 401 and "missing X-Flowctl-Timestamp" in unsigned.json()["detail"]


async def test_a_publish_to_the_hub_fires_service_published_jobs(plane, tmp_path):
    from tests.hub_store.bundles import make_bundle

    client, _ = plane
    job = {"name": "on-publish", "trigger": {"type": "event", "event": "service_published", "service": "echo"},
           "steps": [{"name": "main", "service": "echo@stable", "command": ["true"]}]}
    assert (await client.post("/api/v1/jobs", headers=AUTH, json=job)).status_code == 201
    bundle = make_bundle(tmp_path, "1.0.1")
    put = await client.put("/api/services/echo/1.0.1", headers=AUTH, content=bundle.path.read_bytes())
    assert put.status_code == 201, put.text
    assert (await first_run(client, "on-publish"))["cause"] == "event:service_published"
