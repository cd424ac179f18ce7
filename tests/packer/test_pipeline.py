"""The reused-buffer pipeline under verify and unpack: buffers are recycled only when the
work queued on them is done, large files that wrap the ring arrive intact, and with
deferred digest checks the earliest error is still the one reported."""

import hashlib
import os
import random
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from packer import PackerError, open_bundle, pack_dir, unpack_bundle, verify_bundle
from packer.bufring import BufferRing
from packer.stream import CHUNK, SLOTS
from tests.packer.conftest import write_source
from tests.packer.hostile import member, zst
from tests.packer.test_hostile import NonSeekable


def test_a_slot_is_reused_only_after_its_holds_complete():
    ring = BufferRing(2, 16)
    gate = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        slot, first = ring.acquire()
        first[:4] = b"keep"
        ring.hold(slot, pool.submit(gate.wait, 5))
        ring.acquire()
        done = Future()
        threading.Timer(0.05, lambda: (gate.set(), done.set_result(None))).start()
        slot_again, view = ring.acquire()  # blocks until the hold completes
        assert slot_again == slot and done.done()
        assert bytes(view[:4]) == b"keep"


def test_a_failed_hold_is_raised_when_its_slot_comes_round():
    ring = BufferRing(2, 16)
    failed: Future = Future()
    failed.set_exception(OSError("disk full"))
    slot, _ = ring.acquire()
    ring.hold(slot, failed)
    ring.acquire()
    with pytest.raises(OSError, match="disk full"):
        ring.acquire()


@pytest.fixture
def wide(tmp_path):
    """A bundle whose big file spans more buffers than the ring has, among many small ones."""
    rng = random.Random(7)
    files = {f"src/m{i:03d}.py": bytes(rng.choices(b"abc \n", k=rng.randint(0, 40_000))) for i in range(600)}
    files["models/big.bin"] = os.urandom((SLOTS + 3) * CHUNK + 12345)
    files["models/odd.bin"] = os.urandom(CHUNK + 1)
    files["worker.py"] = b"print(1)\n"
    return files, pack_dir(write_source(tmp_path / "src", files), tmp_path / "d")


def test_unpack_of_files_wider_than_the_ring_is_byte_exact(wide, tmp_path):
    files, result = wide
    dest = tmp_path / "out"
    unpack_bundle(result.path, dest)
    for rel, data in files.items():
        assert (dest / rel).read_bytes() == data, rel


def test_verify_reports_the_file_digest_and_size(wide):
    _files, result = wide
    report = verify_bundle(result.path, expected_sha256=result.sha256)
    assert report.sha256 == hashlib.sha256(result.path.read_bytes()).hexdigest() == result.sha256
    assert report.size == result.path.stat().st_size


def test_views_are_reused_while_default_chunks_are_independent_bytes(wide):
    files, result = wide
    with open(result.path, "rb") as f, open_bundle(f) as reader:
        kept = {e.path: list(chunks) for e, chunks in reader.iter_files()}
    assert all(isinstance(c, bytes) for parts in kept.values() for c in parts)
    assert b"".join(kept["models/big.bin"]) == files["models/big.bin"]
    with open(result.path, "rb") as f, open_bundle(f) as reader:
        for entry, chunks in reader.iter_files(views=True):
            h = hashlib.sha256()
            for chunk in chunks:
                assert isinstance(chunk, memoryview)
                h.update(chunk)
            assert h.hexdigest() == entry.sha256


def _bad_then_broken():
    # a.py's bytes do not match the manifest; then b.bin is missing (a structural error later).
    a, b = b"print('a')\n", b"b" * 1000
    from tests.packer.hostile import manifest_bytes

    body = member("a.py", a.replace(b"a", b"z"))
    return zst(member("service.json", manifest_bytes({"a.py": a, "b.bin": b})) + body + bytes(1024))


def test_deferred_checks_still_report_the_earliest_error(tmp_path):
    blob = _bad_then_broken()
    with pytest.raises(PackerError, match="sha256 mismatch"):
        with open_bundle(NonSeekable(blob)) as reader:
            for _entry, chunks in reader.iter_files(views=True):
                for _ in chunks:
                    pass
    path = tmp_path / "x.fbundle"
    path.write_bytes(blob)
    with pytest.raises(PackerError, match="sha256 mismatch"):
        verify_bundle(path)
    with pytest.raises(PackerError, match="sha256 mismatch"):
        unpack_bundle(path, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.fbundle"]


def test_a_write_error_aborts_unpack_and_leaves_nothing(wide, tmp_path, monkeypatch):
    _files, result = wide
    import packer.unpack

    calls = 0
    real = os.write

    def failing_write(fd, data):
        nonlocal calls
        calls += 1
        if calls == 40:
            raise OSError(28, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(packer.unpack.os, "write", failing_write)
    with pytest.raises(OSError, match="No space left"):
        unpack_bundle(result.path, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "src"]
