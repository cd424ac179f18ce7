"""Artifacts on a plane whose hub blobs are in S3 (moto's server): stored in the shared bucket,
downloaded through a 307 to a presigned URL (the plane never relays the bytes)."""

import hashlib
from functools import partial

import httpx
import pytest
import trio

from runtime.clients.jobs import JobsClient
from runtime.hub import HubSettings
from runtime.plane import PlaneSettings, serve_control_plane
from tests.runtime.jobs.test_artifacts_local import ADMIN, AUTH, _run

pytestmark = pytest.mark.engines


@pytest.fixture
async def plane(nursery, tmp_path, s3_bucket):
    root = tmp_path / "plane"
    settings = PlaneSettings(data_dir=root, port=0, roles=("hub", "jobs"),
                             hub=HubSettings(data_dir=root, blobs=s3_bucket.url))
    with trio.fail_after(30):
        handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))
    async with httpx.AsyncClient(base_url=handle.url, timeout=30, headers=AUTH) as client:
        yield client


async def test_artifacts_live_in_the_bucket_and_download_by_redirect(plane, tmp_path, s3_bucket):
    run = await _run(plane, "printf data > $FLOWCTL_OUTPUT_DIR/y.txt")
    assert run["state"] == "succeeded", run
    [art] = (await plane.get(f"/api/v1/runs/{run['run_id']}/artifacts")).json()["artifacts"]
    digest = hashlib.sha256(b"data").hexdigest()
    assert art["sha256"] == digest
    assert f"hub/blobs/sha256/{digest[:2]}/{digest}" in s3_bucket.keys()
    answer = await plane.get(f"/api/v1/runs/{run['run_id']}/artifacts/main/y.txt")
    assert answer.status_code == 307 and answer.headers["location"].startswith(s3_bucket.endpoint.url)
    client = JobsClient(str(plane.base_url), token=ADMIN)
    path = await trio.to_thread.run_sync(client.download_artifact, art, tmp_path / "out")
    assert path.read_bytes() == b"data"
    assert not [p for p in (tmp_path / "plane" / "blobs").rglob("*") if p.is_file()]
