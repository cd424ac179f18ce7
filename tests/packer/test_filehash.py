"""verify's file SHA-256 from a child process (packer/filehash.py): same digest, no stale one."""

from __future__ import annotations

import hashlib
import os

import pytest

from packer import PackerError, verify_bundle
from packer.filehash import MIN_SIZE, FileHashProcess
from tests.packer.test_pipeline import wide  # noqa: F401  (the fixture)


def test_verify_gets_the_same_digest_from_the_child_and_from_the_thread(wide, monkeypatch):  # noqa: F811
    _files, result = wide
    assert result.path.stat().st_size >= MIN_SIZE  # so the child process is used
    expected = hashlib.sha256(result.path.read_bytes()).hexdigest()
    assert verify_bundle(result.path, expected_sha256=expected).sha256 == expected
    monkeypatch.setenv("FLOWCTL_VERIFY_FILE_HASH", "thread")
    assert verify_bundle(result.path, expected_sha256=expected).sha256 == expected


def test_a_file_changed_while_hashed_is_an_error_not_a_digest(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(MIN_SIZE))
    with open(path, "rb", buffering=0) as f:
        side = FileHashProcess.start(f.fileno())
        assert side is not None
        try:
            with open(path, "ab") as g:
                g.write(b"x")
            with pytest.raises(PackerError, match="changed while it was being verified"):
                side.hexdigest(MIN_SIZE)
        finally:
            side.close()


def test_the_child_reads_with_its_own_offset_and_is_stopped_on_close(tmp_path):
    path = tmp_path / "f.bin"
    data = os.urandom(MIN_SIZE + 5)
    path.write_bytes(data)
    with open(path, "rb", buffering=0) as f:
        f.read(1000)  # the reader's position must not move the child's
        side = FileHashProcess.start(f.fileno())
        assert side is not None
        assert side.hexdigest(len(data)) == hashlib.sha256(data).hexdigest()
        assert f.tell() == 1000
        side.close()
        other = FileHashProcess.start(f.fileno())
        assert other is not None
        other.close()  # before its end: killed and reaped
        assert other._proc.returncode is not None


def test_small_files_and_pipes_use_the_thread(tmp_path):
    path = tmp_path / "small.bin"
    path.write_bytes(b"x" * 100)
    with open(path, "rb") as f:
        assert FileHashProcess.start(f.fileno()) is None
    r, w = os.pipe()
    try:
        assert FileHashProcess.start(r) is None
    finally:
        os.close(r)
        os.close(w)
