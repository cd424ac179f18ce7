"""Artifacts on a jobs-only plane (no scheduler: command steps run on the plane's machine): the
same outputs, limits and API as on nodes, in DATA_DIR/jobs/blobs."""

import hashlib
from functools import partial

import httpx
import pytest
import trio

from runtime.plane import PlaneSettings, serve_control_plane

ADMIN = "jobs-local-artifacts"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
async def plane(nursery, tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWCTL_JOBS_ARTIFACT_MAX_TOTAL_BYTES", "1000")
    settings = PlaneSettings(data_dir=tmp_path / "plane", port=0, roles=("jobs",))
    with trio.fail_after(30):
        handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))
    async with httpx.AsyncClient(base_url=handle.url, timeout=30, headers=AUTH) as client:
        yield client


async def _run(client, script):
    definition = {"name": "j", "trigger": {"type": "manual"},
                  "steps": [{"name": "main", "service": "echo@stable", "command": ["sh", "-c", script]}]}
    assert (await client.put("/api/v1/jobs/j", json=definition)).status_code in (200, 201)
    run_id = (await client.post("/api/v1/jobs/j/trigger", json={})).json()["run_id"]
    with trio.fail_after(30):
        while (run := (await client.get(f"/api/v1/runs/{run_id}")).json())["state"] in ("pending", "running"):  # noqa: ASYNC110
            await trio.sleep(0.05)
    return run


async def test_outputs_of_a_local_command_are_artifacts(plane, tmp_path):
    run = await _run(plane, "mkdir $FLOWCTL_OUTPUT_DIR/x && printf data > $FLOWCTL_OUTPUT_DIR/x/y.txt")
    assert run["state"] == "succeeded", run
    [art] = (await plane.get(f"/api/v1/runs/{run['run_id']}/artifacts")).json()["artifacts"]
    assert art["path"] == "x/y.txt" and art["sha256"] == hashlib.sha256(b"data").hexdigest()
    assert (await plane.get(f"/api/v1/runs/{run['run_id']}/artifacts/main/x/y.txt")).content == b"data"
    blobs = tmp_path / "plane" / "jobs" / "blobs" / "blobs" / "sha256"
    assert (blobs / art["sha256"][:2] / art["sha256"]).read_bytes() == b"data"
    # No scheduler here: no node upload routes.
    assert (await plane.post("/api/cluster/jobs/artifacts", json={})).status_code == 404


async def test_artifacts_over_the_attempt_total_fail_the_step(plane):
    run = await _run(plane, "head -c 600 /dev/zero > $FLOWCTL_OUTPUT_DIR/a; head -c 600 /dev/zero > $FLOWCTL_OUTPUT_DIR/b")
    assert run["state"] == "failed", run
    reason = run["steps"][0]["attempts"][0]["reason"]
    assert reason == "artifacts: the artifacts exceed the limit of 1000 bytes per attempt (at 'b')", reason
    assert (await plane.get(f"/api/v1/runs/{run['run_id']}/artifacts")).json()["artifacts"] == []
