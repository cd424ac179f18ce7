"""A hub with its blobs in S3 (moto's server): 307s to presigned URLs, followed by pull and the node.

The hub's own data dir never holds a blob here, so a download that succeeds came from the
store; the hub's answer for the bytes is a redirect, never a body.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import asynccontextmanager
from dataclasses import replace

import httpx
import pytest
import trio

from hub_store import BlobNotFound
from runtime.api import hash_key
from runtime.clients.errors import PullFailed
from runtime.clients.hub import HubClient
from runtime.http import open_test_server
from runtime.hub import HubSettings, HubState, create_hub_app
from runtime.hub.blobstore import open_hub_data
from runtime.node import BlobMismatch, InstallOptions, NodeLayout, install
from runtime.node.packages.download import FetchPolicy
from tests.runtime.hub.conftest import ADMIN_KEY
from tests.runtime.node.packages.test_real_hub import MODEL, write_source

pytestmark = pytest.mark.engines
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
FAST = FetchPolicy(stall_window=5, min_rate=1024, attempts=3, backoff_initial=0.01, backoff_max=0.05)


@asynccontextmanager
async def s3_hub(tmp_path, bucket, **settings):
    data = await trio.to_thread.run_sync(open_hub_data, tmp_path / "hub", bucket.url)
    try:
        hub_settings = replace(HubSettings(data_dir=tmp_path / "hub", blobs=bucket.url), **settings)
        state = HubState(data, hub_settings, hash_key(ADMIN_KEY), limiter=trio.CapacityLimiter(8))
        async with open_test_server(create_hub_app(state)) as url:
            yield url, state
    finally:
        data.close()


async def publish_echo(tmp_path, url, version="1.0.0"):
    from packer.pack import pack_dir

    src = write_source(tmp_path / f"src-{version}", version, b"print('hi')\n")
    packed = await trio.to_thread.run_sync(lambda: pack_dir(src, tmp_path / "dist"))
    async with HubClient(url, token=ADMIN_KEY) as client:
        await client.publish(packed.path)
    return packed


def local_blobs(tmp_path) -> list:
    root = tmp_path / "hub" / "blobs" / "sha256"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def test_downloads_redirect_to_the_store_and_metadata_is_answered_here(tmp_path, s3_bucket):
    model = hashlib.sha256(MODEL).hexdigest()
    with trio.fail_after(120):
        async with s3_hub(tmp_path, s3_bucket) as (url, _), \
                httpx.AsyncClient(base_url=url, timeout=30) as client:
            packed = await publish_echo(tmp_path, url)
            got = await client.get(f"/blobs/sha256:{model}")
            assert got.status_code == 307 and got.content == b""
            assert got.headers["location"].startswith(s3_bucket.endpoint.url + "/")
            assert got.headers["cache-control"] == "no-store"
            head = await client.head(f"/blobs/sha256:{model}")
            assert head.status_code == 200 and head.headers["content-length"] == str(len(MODEL))
            assert "location" not in head.headers
            same = await client.get(f"/blobs/sha256:{model}", headers={"If-None-Match": f'"{model}"'})
            assert same.status_code == 304
            bundle = await client.get("/storage/services/echo/1.0.0.fbundle")
            assert bundle.status_code == 307 and "filename" in bundle.headers["location"]
            manifest = await client.get("/api/services/echo/1.0.0/manifest")  # small metadata: served
            assert manifest.status_code == 200 and b'"service_id"' in manifest.content
            async with httpx.AsyncClient(timeout=30) as store:
                fetched = await store.get(got.headers["location"])
            assert fetched.content == MODEL
            missing = await client.get("/blobs/sha256:" + "0" * 64)
            assert missing.status_code == 404
    assert local_blobs(tmp_path) == []
    assert packed.sha256 in {k.rsplit("/", 1)[-1] for k in s3_bucket.keys()}


async def test_pull_follows_without_the_hubs_authorization_and_resumes(tmp_path, s3_bucket):
    seen: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        seen.append(request)

    with trio.fail_after(120):
        async with s3_hub(tmp_path, s3_bucket, private=True) as (url, _):
            packed = await publish_echo(tmp_path, url)
            out = tmp_path / "out"
            out.mkdir()
            data = packed.path.read_bytes()
            (out / "echo-1.0.0.fbundle.part").write_bytes(data[:1000])  # an interrupted pull
            async with HubClient(url, token=ADMIN_KEY) as client:
                client.store_http.event_hooks["request"] = [record]
                pulled = await client.pull("echo", "1.0.0", out)
    assert pulled.resumed_from == 1000 and pulled.path.read_bytes() == data
    assert seen, "the pull did not go to the store"
    assert all("authorization" not in r.headers for r in seen)
    assert seen[0].headers["range"] == "bytes=1000-"


async def test_node_install_resumes_from_the_store_and_checks_digests(tmp_path, s3_bucket):
    layout = NodeLayout.create(tmp_path / "node")
    model = hashlib.sha256(MODEL).hexdigest()
    with trio.fail_after(120):
        async with s3_hub(tmp_path, s3_bucket) as (url, _):
            await publish_echo(tmp_path, url)
            layout.partial_path(model).write_bytes(MODEL[:123_456])  # a download cut off earlier
            report = await install(layout, url, "echo", "1.0.0", options=InstallOptions(policy=FAST, venv=False))
    assert report.resumed_bytes == 123_456
    assert report.downloaded_bytes == len(MODEL) - 123_456 + len(b"print('hi')\n")
    assert (layout.version_dir("echo", "1.0.0") / "models" / "m.bin").read_bytes() == MODEL
    assert local_blobs(tmp_path) == []


async def test_a_corrupt_object_is_refused_by_the_node_and_by_pull(tmp_path, s3_bucket):
    layout = NodeLayout.create(tmp_path / "node")
    model = hashlib.sha256(MODEL).hexdigest()
    with trio.fail_after(120):
        async with s3_hub(tmp_path, s3_bucket) as (url, state):
            packed = await publish_echo(tmp_path, url)
            store, client = state.data.remote, s3_bucket.endpoint.client()
            evil = os.urandom(len(MODEL))  # same size: only the digest can tell
            client.put_object(Bucket=s3_bucket.name, Key=store.key(model), Body=evil)
            with pytest.raises(BlobMismatch):
                await install(layout, url, "echo", "1.0.0", options=InstallOptions(policy=FAST, venv=False))
            assert not layout.version_dir("echo", "1.0.0").exists()
            bad = bytearray(packed.path.read_bytes())
            bad[-1] ^= 0xFF
            client.put_object(Bucket=s3_bucket.name, Key=store.key(packed.sha256), Body=bytes(bad))
            async with HubClient(url) as hub:
                with pytest.raises(PullFailed, match="sha256 mismatch"):
                    await hub.pull("echo", "1.0.0", tmp_path / "out")
            assert not (tmp_path / "out" / "echo-1.0.0.fbundle").exists()
            async with httpx.AsyncClient(base_url=url, timeout=60) as admin:
                report = (await admin.post("/api/admin/fsck", headers=AUTH)).json()
    assert not report["ok"] and f"sha256:{model}" in report["corrupt"]


class ExpireFirst(httpx.AsyncBaseTransport):
    """The store's transport, answering its first request as S3 answers an expired presigned URL."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.calls == 1:
            return httpx.Response(403, content=b"<Error><Code>AccessDenied</Code>"
                                               b"<Message>Request has expired</Message></Error>")
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_an_expired_presigned_url_is_asked_for_again(tmp_path, s3_bucket):
    from runtime.node.packages.download import fetch_blob

    model = hashlib.sha256(MODEL).hexdigest()
    store_side = ExpireFirst()
    asked: list[str] = []

    async def count(request: httpx.Request) -> None:
        asked.append(str(request.url))

    with trio.fail_after(120):
        async with s3_hub(tmp_path, s3_bucket) as (url, _):
            await publish_echo(tmp_path, url)
            local = NodeLayout.create(tmp_path / "node")
            from hub_store import LocalBlobStore

            blobs = LocalBlobStore(local.root)
            async with httpx.AsyncClient(event_hooks={"request": [count]}) as hub, \
                    httpx.AsyncClient(transport=store_side) as store:
                result = await fetch_blob(hub, f"{url}/blobs/sha256:{model}", model, len(MODEL),
                                          local.partial_path(model), blobs.adopt, policy=FAST, store_client=store)
    assert result.downloaded == len(MODEL) and blobs.read_bytes(model) == MODEL
    assert store_side.calls == 2 and len(asked) == 2  # the hub was asked again for a fresh URL


async def test_gc_deletes_unreferenced_objects_in_the_bucket(tmp_path, s3_bucket):
    with trio.fail_after(120):
        async with s3_hub(tmp_path, s3_bucket) as (url, state):
            await publish_echo(tmp_path, url)
            stray = await trio.to_thread.run_sync(state.data.remote.put_bytes, b"nobody refers to me")
            async with httpx.AsyncClient(base_url=url, timeout=60) as admin:
                report = (await admin.post("/api/admin/gc", headers=AUTH)).json()
                assert report["deleted"] == 1 and report["uploads_aborted"] == 0
                fsck = (await admin.post("/api/admin/fsck", headers=AUTH)).json()
            with pytest.raises(BlobNotFound):
                await trio.to_thread.run_sync(state.data.remote.stat, stray.digest)
    assert fsck["ok"] and fsck["missing"] == []


async def test_a_store_gone_mid_life_answers_503_naming_it(tmp_path, s3_bucket, monkeypatch):
    from runtime.hub.s3blobs import S3BlobStore
    from runtime.hub.s3client import parse_s3_url

    with trio.fail_after(120):
        async with s3_hub(tmp_path, s3_bucket) as (url, state), \
                httpx.AsyncClient(base_url=url, timeout=60) as client:
            await publish_echo(tmp_path, url)
            # The same bucket behind an endpoint that no longer answers (the store went away).
            dead = parse_s3_url(s3_bucket.url, endpoint="http://127.0.0.1:9")
            state.data.remote = S3BlobStore(dead, state.data.store)
            model = hashlib.sha256(MODEL).hexdigest()
            answer = await client.get(f"/blobs/sha256:{model}")
            manifest = await client.get("/api/services/echo/1.0.0/manifest")
    assert answer.status_code == 503 and "127.0.0.1:9" in answer.json()["detail"]
    assert manifest.status_code == 503
    assert s3_bucket.endpoint.secret_key not in answer.text


async def test_a_rollout_asks_the_store_for_a_blobs_size_once(tmp_path, s3_bucket):
    heads = []
    model = hashlib.sha256(MODEL).hexdigest()
    with trio.fail_after(120):
        async with s3_hub(tmp_path, s3_bucket) as (url, state), \
                httpx.AsyncClient(base_url=url, timeout=60) as client:
            await publish_echo(tmp_path, url)
            state.data.remote.client.meta.events.register("before-call.s3.HeadObject",
                                                          lambda **_: heads.append(1))
            answers = [await client.get(f"/blobs/sha256:{model}") for _ in range(20)]
    assert {a.status_code for a in answers} == {307}
    assert len(heads) == 1  # one HEAD for twenty redirects


class AlwaysRefuse(httpx.AsyncBaseTransport):
    """A store that refuses every presigned URL, echoing an access key id as S3 sometimes does."""

    def __init__(self) -> None:
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        return httpx.Response(403, content=b"<Error><Code>SignatureDoesNotMatch</Code><Message>no</Message>"
                                           b"<AWSAccessKeyId>AKIA-SHOULD-NOT-SHOW</AWSAccessKeyId></Error>")


async def test_a_refusing_store_fails_the_pull_in_one_line_without_the_signed_url(tmp_path, s3_bucket):
    from runtime.clients.errors import HubRequestFailed

    refuse = AlwaysRefuse()
    with trio.fail_after(120):
        async with s3_hub(tmp_path, s3_bucket) as (url, _):
            await publish_echo(tmp_path, url)
            async with HubClient(url) as client:
                client._store = httpx.AsyncClient(transport=refuse)
                with pytest.raises(HubRequestFailed) as info:
                    await client.pull("echo", "1.0.0", tmp_path / "out")
    message = str(info.value)
    assert refuse.calls == 2  # the second URL came fresh from the hub
    assert "SignatureDoesNotMatch" in message and url in message and "\n" not in message
    assert "X-Amz-Signature" not in message and "AKIA-SHOULD-NOT-SHOW" not in message
