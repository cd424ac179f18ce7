"""`flowctl serve --blobs s3://...` as an operator runs it, against moto's S3 server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.hub_store.bundles import make_bundle

pytestmark = pytest.mark.engines
KEY = "blobs-cli-admin-key"


def flowctl(*args, env, timeout=60):
    return subprocess.run([sys.executable, "-m", "flowctl", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture
def plane_env(tmp_path, s3_bucket):
    # s3_bucket has put FLOWCTL_S3_ENDPOINT_URL and AWS_* into os.environ for this test.
    return {**os.environ, "FLOWCTL_ADMIN_KEY": KEY, "FLOWCTL_CONFIG": str(tmp_path / "none.toml")}


def start_plane(tmp_path, env, *args):
    proc = subprocess.Popen([sys.executable, "-m", "flowctl", "serve", "--roles", "hub,scheduler",
                             "--data-dir", str(tmp_path / "data"), "--port", "0", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    url = None
    while url is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        url = match.group(1) if match else None
        if not line and proc.poll() is not None:
            break
    return proc, url


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()
    proc.stderr.close()


def test_publish_and_pull_through_a_plane_whose_blobs_are_in_s3(tmp_path, s3_bucket, plane_env):
    proc, url = start_plane(tmp_path, plane_env, "--blobs", s3_bucket.url, "--blob-url-ttl", "120")
    try:
        assert url, "the plane did not start"
        env = {**plane_env, "FLOWCTL_HUB_URL": url, "FLOWCTL_TOKEN": KEY}
        packed = make_bundle(tmp_path)
        r = flowctl("publish", str(packed.path), "--json", env=env)
        assert r.returncode == 0, r.stderr
        r = flowctl("hub", "pull", "echo", "-o", str(tmp_path / "out"), "--json", env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["sha256"] == packed.sha256
        assert (tmp_path / "out" / "echo-1.0.0.fbundle").read_bytes() == packed.path.read_bytes()
        answer = httpx.get(f"{url}/storage/services/echo/1.0.0.fbundle", timeout=30)
        assert answer.status_code == 307 and answer.content == b""
        assert "X-Amz-Expires=120" in answer.headers["location"]
    finally:
        stop(proc)
    assert proc.returncode == 0
    assert f"hub/blobs/sha256/{packed.sha256[:2]}/{packed.sha256}" in s3_bucket.keys()
    local = tmp_path / "data" / "blobs" / "sha256"
    assert not [p for p in local.rglob("*") if p.is_file()]
    r = flowctl("hub", "fsck", "--data-dir", str(tmp_path / "data"), "--blobs", s3_bucket.url, "--json",
                env=plane_env)  # offline, on the bucket
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["checked"] == len(packed.manifest.files) + 3  # + bundle, manifest, zip
    r = flowctl("hub", "gc", "--data-dir", str(tmp_path / "data"), "--json",
                env={**plane_env, "FLOWCTL_BLOBS": s3_bucket.url})
    assert r.returncode == 0 and json.loads(r.stdout)["deleted"] == 0, r.stderr


def test_a_missing_bucket_stops_the_start_with_one_line(tmp_path, s3_bucket, plane_env):
    r = flowctl("serve", "--roles", "hub,scheduler", "--data-dir", str(tmp_path / "data"), "--port", "0",
                "--blobs", "s3://no-such-bucket-here/hub", env=plane_env)
    assert r.returncode == 1
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "bucket 'no-such-bucket-here' does not exist" in lines[0], r.stderr
    assert s3_bucket.endpoint.secret_key not in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "data").exists()  # checked before anything was written


@pytest.mark.parametrize("url, message", [("ftp://somewhere/x", "must be file:///DIR or s3://"),
                                          ("s3://Not_A_Bucket/x", "invalid S3 bucket name")])
def test_a_bad_blobs_url_is_one_line(tmp_path, plane_env, url, message):
    r = flowctl("serve", "--data-dir", str(tmp_path / "data"), "--port", "0", "--blobs", url, env=plane_env)
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
