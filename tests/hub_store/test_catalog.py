import sqlite3

import pytest

from hub_store import Catalog, FileRecord, ModelRecord, NewVersion, NotFound
from hub_store.catalog import SCHEMA_VERSION


def new(version, *, sid="echo", stable=True, files=(("a.txt", "1" * 64),), models=()):
    return NewVersion(
        service_id=sid, service_name="Echo", service_type="python", port=5008, description="d",
        version=version, sha256=version.replace(".", "").ljust(64, "f")[:64], size_bytes=10,
        manifest_sha256="e" * 64, created_at="2025-12-17T00:00:00Z", stable=stable, signature=None,
        signer=None, files=tuple(FileRecord(p, 3, 0o644, d) for p, d in files),
        models=tuple(ModelRecord(m, version, "chat", sid, version, "models") for m in models))


@pytest.fixture
def catalog(state):
    """The catalog on each state engine: SQLite, then PostgreSQL."""
    with Catalog(state) as cat:
        yield cat


def test_schema_is_versioned_and_wal(tmp_path):
    Catalog(tmp_path / "c.sqlite3").close()
    db = sqlite3.connect(tmp_path / "c.sqlite3")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_reopen_keeps_data(state):
    with Catalog(state) as cat:
        cat.add_version(new("1.0.0"))
    with Catalog(state) as cat:
        assert cat.get_version("echo", "1.0.0").size_bytes == 10


def test_signatures_flags_and_references_inside_a_transaction(catalog):
    signed = new("1.0.0")
    signed = type(signed)(**{**signed.__dict__, "signature": b"\x00sig\xff", "signer": "me"})
    catalog.add_version(signed)
    assert catalog.signature("echo", "1.0.0") == b"\x00sig\xff"
    assert catalog.get_version("echo", "1.0.0").signed and catalog.get_version("echo", "1.0.0").stable is True
    with pytest.raises(sqlite3.IntegrityError):
        catalog.add_version(new("1.0.0"))
    with catalog.transaction() as db:
        assert catalog.is_referenced(db, "1" * 64) and not catalog.is_referenced(db, "7" * 64)
        assert catalog.live_leases(db) == set()


def test_latest_is_highest_stable_non_yanked_semver(catalog):
    for v, stable in [("1.0.0", True), ("1.10.0", True), ("1.9.0", True), ("2.0.0-rc.1", False)]:
        catalog.add_version(new(v, stable=stable))
    assert catalog.resolve("echo", "latest").version == "1.10.0"
    catalog.set_flags("echo", "1.10.0", yanked=True)
    assert catalog.resolve("echo", "latest").version == "1.9.0"
    catalog.set_flags("echo", "2.0.0-rc.1", stable=True)
    assert catalog.resolve("echo", "latest").version == "2.0.0-rc.1"
    assert [v.version for v in catalog.service("echo").versions] == ["2.0.0-rc.1", "1.10.0", "1.9.0", "1.0.0"]


def test_missing_things_are_not_found(catalog):
    with pytest.raises(NotFound):
        catalog.resolve("nope", "latest")
    with pytest.raises(NotFound):
        catalog.set_flags("nope", "1.0.0", stable=True)
    catalog.add_version(new("1.0.0", stable=False))
    with pytest.raises(NotFound, match="no stable"):
        catalog.resolve("echo", "latest")


def test_files_models_and_ranking(catalog):
    catalog.add_version(new("1.0.0", files=(("b", "2" * 64), ("a", "1" * 64)), models=("m1", "m2")))
    assert [f.path for f in catalog.files("echo", "1.0.0")] == ["a", "b"]
    assert catalog.file("echo", "1.0.0", "b").sha256 == "2" * 64
    model, version = catalog.resolve_model("m1", "latest")
    assert (model.service_id, version.version) == ("echo", "1.0.0")
    catalog.count_downloads(["m2"])
    catalog.count_downloads(["m1", "m2"])
    assert [(m, n) for m, n, _ in catalog.ranking()] == [("m2", 2), ("m1", 1)]


def test_references_and_leases(catalog):
    catalog.add_version(new("1.0.0"), lease_id="L")
    refs = catalog.referenced_digests()
    assert {"1" * 64, "e" * 64, catalog.get_version("echo", "1.0.0").sha256} <= refs
    catalog.lease_many("L2", ["9" * 64])
    assert catalog.live_leases() == {"9" * 64}
    catalog.release("L2")
    assert catalog.live_leases() == set()
    catalog.lease("L3", "8" * 64, ttl_s=-1)
    assert catalog.live_leases() == set() and catalog.purge_expired_leases() == 1
