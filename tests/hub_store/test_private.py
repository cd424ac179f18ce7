"""Owner-only state: data dirs 0700, SQLite files (and their -wal/-shm) 0600, old ones tightened."""

import logging
import os
import sqlite3
import stat

import pytest

from hub_store import make_private_database, make_private_dir, open_data_dir


@pytest.fixture
def loose_umask():
    """The common umask, under which plain creation gives 0755 dirs and 0644 files."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_data_dir_and_its_catalog_are_owner_only(tmp_path, loose_umask):
    with open_data_dir(tmp_path / "a" / "hub") as data:
        data.catalog.purge_expired_leases()  # a write: the WAL and its index exist now
        root = tmp_path / "a" / "hub"
        assert mode(root) == 0o700
        for name in ("catalog.sqlite3", "catalog.sqlite3-wal", "catalog.sqlite3-shm"):
            assert mode(root / name) == 0o600, name


def test_a_loose_dir_and_database_from_an_older_version_are_tightened_once(tmp_path, loose_umask, caplog):
    root = tmp_path / "old"
    root.mkdir()
    db_path = root / "cluster.db"
    db = sqlite3.connect(db_path)  # as before: created under the umask, 0644
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x)")
    assert mode(db_path) == 0o644 and mode(root) == 0o755
    sides = [root / "cluster.db-wal", root / "cluster.db-shm"]
    assert all(mode(p) == 0o644 for p in sides)
    with caplog.at_level(logging.WARNING, logger="flowctl.store"):
        make_private_dir(root)
        make_private_database(db_path)
    assert mode(root) == 0o700 and mode(db_path) == 0o600
    assert all(mode(p) == 0o600 for p in sides)
    assert len(caplog.records) == 4 and "readable by others (mode 0644); now 0600" in caplog.text
    assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)  # never truncated
    db.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flowctl.store"):
        make_private_dir(root)
        make_private_database(db_path)
    assert caplog.records == []  # already tight: nothing to say


def test_the_owner_bits_are_kept(tmp_path, loose_umask):
    path = tmp_path / "ro.db"
    path.write_bytes(b"")
    path.chmod(0o444)
    make_private_database(path)
    assert mode(path) == 0o400
