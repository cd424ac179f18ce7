import hashlib
import os

import pytest

from hub_store import (
    BlobCorrupt,
    BlobDigestMismatch,
    BlobNotFound,
    InvalidIdentifier,
    LocalBlobStore,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_put_then_read_by_digest(tmp_path):
    store = LocalBlobStore(tmp_path)
    info = store.put_bytes(b"hello")
    assert info.digest == sha(b"hello") and info.size == 5
    assert store.path(info.digest) == tmp_path / "blobs" / "sha256" / info.digest[:2] / info.digest
    assert store.read_bytes(info.digest) == b"hello"
    assert store.stat(info.digest).size == 5
    assert oct(store.path(info.digest).stat().st_mode & 0o777) == oct(0o444)
    assert [b.digest for b in store.iter_blobs()] == [info.digest]


def test_identical_bytes_are_stored_once(tmp_path):
    store = LocalBlobStore(tmp_path)
    a = store.put_chunks([b"ab", b"c"])
    b = store.put_bytes(b"abc")
    assert a.digest == b.digest
    assert len(list(store.iter_blobs())) == 1
    assert list(store.iter_temp()) == []


def test_wrong_expected_digest_leaves_nothing(tmp_path):
    store = LocalBlobStore(tmp_path)
    with pytest.raises(BlobDigestMismatch):
        store.put_chunks([b"data"], expected=sha(b"other"))
    assert list(store.iter_blobs()) == []
    assert list(store.iter_temp()) == []


def test_writer_abandoned_midway_leaves_nothing(tmp_path):
    store = LocalBlobStore(tmp_path)
    with pytest.raises(RuntimeError), store.writer() as w:
        w.write(b"partial")
        raise RuntimeError("cut off")
    assert list(store.iter_blobs()) == [] and list(store.iter_temp()) == []


def test_lease_is_taken_before_the_blob_becomes_visible(tmp_path):
    store = LocalBlobStore(tmp_path)
    seen = []
    store.put_bytes(b"x", lease=lambda d: seen.append((d, store.exists(d))))
    assert seen == [(sha(b"x"), False)]


def test_corruption_is_detected(tmp_path):
    store = LocalBlobStore(tmp_path)
    digest = store.put_bytes(b"good bytes").digest
    path = store.path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"evil bytes")
    with pytest.raises(BlobCorrupt):
        store.read_bytes(digest)
    with pytest.raises(BlobCorrupt):
        store.verify(digest)
    assert store.quarantine(digest) is not None
    assert not store.exists(digest)


def test_bad_digests_never_become_paths(tmp_path):
    store = LocalBlobStore(tmp_path)
    for bad in ["../etc/passwd", "A" * 64, "0" * 63, "sha256:" + "0" * 64, "", "0" * 64 + "/x"]:
        with pytest.raises(InvalidIdentifier):
            store.path(bad)
    with pytest.raises(BlobNotFound):
        store.open("0" * 64)


def test_delete(tmp_path):
    store = LocalBlobStore(tmp_path)
    d = store.put_bytes(b"z").digest
    assert store.delete(d) and not store.delete(d)
    assert not store.exists(d)


def test_verified_chunks_are_not_hashed_twice_but_a_failing_source_leaves_nothing(tmp_path):
    store = LocalBlobStore(tmp_path)

    def checked_source():
        yield b"part one "
        raise ValueError("digest mismatch detected by the source")

    with pytest.raises(ValueError):
        store.put_chunks(checked_source(), expected=sha(b"part one two"), verified=True)
    assert list(store.iter_blobs()) == [] and list(store.iter_temp()) == []
    info = store.put_chunks([b"part one ", b"two"], expected=sha(b"part one two"), verified=True)
    assert store.read_bytes(info.digest) == b"part one two"
