"""An S3 API for the tests: moto's server mode, the stand-in for a real object store.

moto (`python -m moto.server`) answers the plain S3 REST API over HTTP on 127.0.0.1 and a
free port, in memory. It is only the tests' stand-in: the blob store speaks plain S3 through
boto3 (path-style addressing, SigV4, presigned GETs), so MinIO, Ceph RGW, Cloudflare R2 or AWS
itself work the same way with FLOWCTL_S3_ENDPOINT_URL and the AWS_* variables set.

`s3_endpoint` is the session's server (started once, stopped at the end of the run);
`s3_bucket` gives each test a fresh, empty bucket and points FLOWCTL_S3_ENDPOINT_URL and
test credentials at the server for that test (child processes inherit them).
Without moto installed (the `dev` extra) the test is skipped, saying so.
"""

from __future__ import annotations

import importlib.util
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

START_TIMEOUT = 30.0
ACCESS_KEY = "flowctl-test-access"
SECRET_KEY = "flowctl-test-secret-not-a-real-one"
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class S3Endpoint:
    """A running S3 API: its URL and the credentials the tests use against it."""

    url: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION

    def env(self) -> dict[str, str]:
        """The variables a flowctl process reads to reach this store."""
        return {"FLOWCTL_S3_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": self.region}

    def client(self) -> Any:
        """A boto3 S3 client of this endpoint (for setting up and inspecting buckets)."""
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))


def _wait_ready(process: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto's server exited with status {process.returncode} before answering")
        try:
            with urllib.request.urlopen(url + "/", timeout=1.0):
                return
        except urllib.error.HTTPError:
            return  # an S3 error document is an answer
        except OSError:
            time.sleep(0.05)  # a child process starting: nothing to wait on but the socket
    raise RuntimeError(f"moto's server did not answer on {url} within {START_TIMEOUT:g} s")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    """moto's S3 server on 127.0.0.1 for the whole run (skipped when moto is not installed)."""
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("boto3") is None:
        pytest.skip("moto[server] and boto3 are not installed (pip install -e '.[dev,scale]')")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(process, url)
        yield S3Endpoint(url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass(frozen=True)
class S3Bucket:
    """A fresh bucket of one test on `endpoint`: `url` is the `--blobs` value (s3://NAME/PREFIX)."""

    endpoint: S3Endpoint
    name: str
    prefix: str

    @property
    def url(self) -> str:
        """The `--blobs` URL of this bucket and prefix."""
        return f"s3://{self.name}/{self.prefix}"

    def keys(self) -> list[str]:
        """Every object key in the bucket."""
        client = self.endpoint.client()
        found: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.name):
            found += [item["Key"] for item in page.get("Contents", [])]
        return found


@pytest.fixture
def s3_bucket(s3_endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    """An empty bucket for this test, with FLOWCTL_S3_ENDPOINT_URL and AWS_* set to reach it."""
    name = f"flowctl-test-{secrets.token_hex(6)}"
    s3_endpoint.client().create_bucket(Bucket=name)
    for key, value in s3_endpoint.env().items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookups
    return S3Bucket(s3_endpoint, name, "hub")
