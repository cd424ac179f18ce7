"""Disk space for publishing: checked up front above a reserve; a full disk named, never half-written."""

import os
import sqlite3

import pytest

from hub_store import (
    InsufficientStorage,
    SpaceGuard,
    copy_to_temp,
    fsck,
    ingest_bundle,
    is_disk_full,
    open_data_dir,
)
from tests.hub_store.bundles import make_bundle
from tests.tmpfs import small_tmpfs

MIB = 1 << 20


def test_the_guard_keeps_the_reserve_free(tmp_path):
    guard = SpaceGuard(tmp_path, reserve_bytes=100, free_bytes=lambda _: 1000)
    guard.require(900, "a bundle of 900 bytes")  # exactly the reserve left: fine
    with pytest.raises(InsufficientStorage) as info:
        guard.require(901, "a bundle of 901 bytes")
    assert str(info.value) == ("not enough disk space for a bundle of 901 bytes: needs 901 bytes, "
                               "1000 free (of which 100 are kept in reserve)")
    assert (info.value.needed, info.value.free, info.value.reserve) == (901, 1000, 100)


def test_disk_full_is_recognised_from_the_os_and_from_sqlite():
    assert is_disk_full(OSError(28, "No space left on device"))
    assert not is_disk_full(OSError(13, "Permission denied")) and not is_disk_full(ValueError())
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (x)")
    db.execute("PRAGMA max_page_count=2")  # SQLite's own "disk" is full after two pages
    with pytest.raises(sqlite3.OperationalError) as info:
        db.executemany("INSERT INTO t VALUES (?)", [(b"x" * 1000,)] * 100)
    assert is_disk_full(info.value)


def test_files_that_do_not_fit_are_refused_before_any_is_written(tmp_path):
    # Zeros pack into a few KiB, so the upload fits; its 8 MiB of files do not.
    packed = make_bundle(tmp_path, files={"worker.py": b"print(1)\n", "big.bin": bytes(8 * MIB)})
    with small_tmpfs(tmp_path / "disk", 4 * MIB) as disk, open_data_dir(disk / "hub") as data:
        temp, digest, size = copy_to_temp(data.store, packed.path)
        space = SpaceGuard(data.root, reserve_bytes=0)
        with pytest.raises(InsufficientStorage, match=r"not enough disk space for the files of echo@1\.0\.0"):
            ingest_bundle(data.store, data.catalog, temp, sha256=digest, size=size, space=space)
        assert list(data.store.iter_temp()) == [] and list(data.store.iter_blobs()) == []
        assert data.catalog.services() == [] and data.catalog.live_leases() == set()


def test_a_disk_that_fills_up_mid_publish_leaves_nothing_half_written(tmp_path):
    packed = make_bundle(tmp_path, files={"worker.py": b"print(1)\n", "big.bin": bytes(8 * MIB)})
    small = make_bundle(tmp_path, "1.0.1")
    with small_tmpfs(tmp_path / "disk", 4 * MIB) as disk, open_data_dir(disk / "hub") as data:
        temp, digest, size = copy_to_temp(data.store, packed.path)
        with pytest.raises(InsufficientStorage) as info:  # no space check: the write itself fails
            ingest_bundle(data.store, data.catalog, temp, sha256=digest, size=size)
        assert str(info.value) == ("the hub's disk is full: echo@1.0.0 could not be stored; "
                                   "free some space and retry")
        assert isinstance(info.value.__cause__, OSError) and is_disk_full(info.value.__cause__)
        assert list(data.store.iter_temp()) == []  # neither the upload nor a partial blob
        assert data.catalog.services() == [] and data.catalog.live_leases() == set()
        assert fsck(data.store, data.catalog).ok
        # The store still works once the space is there.
        temp, digest, size = copy_to_temp(data.store, small.path)
        assert ingest_bundle(data.store, data.catalog, temp, sha256=digest, size=size).created
        assert os.listdir(data.store.tmp_dir) == []
