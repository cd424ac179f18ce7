"""S3BlobStore against a real S3 API (moto's server): verified writes, nothing half-visible."""

from __future__ import annotations

import hashlib
import os

import httpx
import pytest

from hub_store import (
    BlobCorrupt,
    BlobDigestMismatch,
    BlobNotFound,
    BlobStoreUnavailable,
    LocalBlobStore,
)
from runtime.hub.s3blobs import S3BlobStore
from runtime.hub.s3client import parse_s3_url

pytestmark = pytest.mark.engines
BIG = 20 << 20  # over two parts: a multipart upload


@pytest.fixture
def store(s3_bucket, tmp_path):
    return S3BlobStore.connect(s3_bucket.url, LocalBlobStore(tmp_path / "spool"))


def _pending_uploads(s3_bucket) -> list:
    return s3_bucket.endpoint.client().list_multipart_uploads(Bucket=s3_bucket.name).get("Uploads", [])


def test_put_stat_open_list_delete(store, s3_bucket):
    data = b"hello blobs"
    digest = hashlib.sha256(data).hexdigest()
    info = store.put_bytes(data)
    assert (info.digest, info.size) == (digest, len(data))
    assert s3_bucket.keys() == [f"hub/blobs/sha256/{digest[:2]}/{digest}"]
    assert store.exists(digest) and store.stat(digest).size == len(data)
    with store.open(digest) as body:
        assert body.read() == data
    assert [b.digest for b in store.iter_blobs()] == [digest]
    assert store.delete(digest) is True and store.delete(digest) is False
    with pytest.raises(BlobNotFound):
        store.stat(digest)


def test_multipart_stream_is_checked_then_visible(store, s3_bucket):
    data = os.urandom(BIG)
    digest = hashlib.sha256(data).hexdigest()
    info = store.put_chunks((data[i:i + (1 << 20)] for i in range(0, BIG, 1 << 20)), expected=digest)
    assert info.size == BIG and store.hash_file(digest) == digest
    assert not _pending_uploads(s3_bucket)


def test_wrong_digest_leaves_no_object_and_no_upload(store, s3_bucket):
    data = os.urandom(BIG)
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(BlobDigestMismatch):
        store.put_chunks([data[:BIG // 2], data[BIG // 2:]], expected=wrong)
    assert s3_bucket.keys() == [] and not _pending_uploads(s3_bucket)


def test_upload_failing_midway_leaves_nothing_under_the_final_key(store, s3_bucket):
    data = os.urandom(BIG)
    digest = hashlib.sha256(data).hexdigest()

    def chunks():
        yield data[:18 << 20]  # a part has gone up by now
        raise OSError("the client went away")

    with pytest.raises(OSError, match="went away"):
        store.put_chunks(chunks(), expected=digest)
    assert s3_bucket.keys() == [] and not _pending_uploads(s3_bucket)
    assert not store.exists(digest)


def test_writer_without_digest_spools_then_uploads(store, tmp_path):
    data = os.urandom(3 << 20)
    with store.writer() as w:
        w.write(data[:1 << 20])
        w.write(data[1 << 20:])
        info = w.commit()
    assert info.digest == hashlib.sha256(data).hexdigest()
    assert list((tmp_path / "spool" / "tmp").iterdir()) == []


def test_adopt_uploads_a_temp_file_and_removes_it(store):
    temp = store.temp_file()
    temp.write_bytes(b"bundle bytes")
    digest = store.seal(temp)
    store.adopt(temp, digest)
    assert not temp.exists() and store.read_bytes(digest) == b"bundle bytes"
    with store.local_file(digest) as path:
        assert path.read_bytes() == b"bundle bytes"
    assert not path.exists()


def test_corrupt_object_is_found_and_quarantined(store, s3_bucket):
    digest = hashlib.sha256(b"good").hexdigest()
    s3_bucket.endpoint.client().put_object(Bucket=s3_bucket.name, Key=store.key(digest), Body=b"evil")
    assert store.hash_file(digest) != digest
    with pytest.raises(BlobCorrupt):
        store.read_bytes(digest)
    assert store.quarantine(digest) is not None
    assert not store.exists(digest)
    assert [k for k in s3_bucket.keys() if k.startswith("hub/quarantine/")]


async def test_presigned_get_serves_ranges_without_credentials(store):
    data = os.urandom(1000)
    digest = store.put_bytes(data).digest
    url = store.presign_get(digest, 60, disposition='attachment; filename="x.bin"')
    async with httpx.AsyncClient() as client:
        whole = await client.get(url)
        part = await client.get(url, headers={"Range": "bytes=100-"})
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-disposition"] == 'attachment; filename="x.bin"'
    assert part.status_code == 206 and part.content == data[100:]


def test_missing_bucket_is_one_clear_line(s3_bucket, tmp_path):
    with pytest.raises(BlobStoreUnavailable, match=r"bucket 'no-such-bucket' does not exist") as info:
        S3BlobStore.connect("s3://no-such-bucket/x", LocalBlobStore(tmp_path / "spool"))
    assert "\n" not in str(info.value) and s3_bucket.endpoint.secret_key not in str(info.value)


@pytest.mark.parametrize("url, message", [
    ("s3:/bucket", "starts with s3://"),
    ("s3://Bad_Bucket/x", "invalid S3 bucket name"),
    ("s3://key:secret@bucket/x", "not in the blobs URL"),
    ("s3://bucket/a/../b", "may not contain"),
])
def test_bad_urls_are_refused(url, message):
    with pytest.raises(ValueError, match=message):
        parse_s3_url(url, endpoint="http://127.0.0.1:9")


def test_no_credentials_is_one_clear_line(s3_bucket, tmp_path, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(BlobStoreUnavailable, match="Unable to locate credentials") as info:
        S3BlobStore.connect(s3_bucket.url, LocalBlobStore(tmp_path / "spool"))
    assert "\n" not in str(info.value)


def test_an_unreachable_store_is_blob_store_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-never-shown")
    location = parse_s3_url("s3://bucket/p", endpoint="http://127.0.0.1:9")
    with pytest.raises(BlobStoreUnavailable, match=r"127\.0\.0\.1:9") as info:
        S3BlobStore(location, LocalBlobStore(tmp_path / "spool")).stat("a" * 64)
    assert "secret-never-shown" not in str(info.value) and "\n" not in str(info.value)
