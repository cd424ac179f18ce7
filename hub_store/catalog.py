"""The hub's catalog: services, versions, files, models, downloads, leases.

Synchronous and thread-safe; the runtime calls it through `trio.to_thread.run_sync`.
On SQLite (the default) it is DATA_DIR/catalog.sqlite3 (WAL, a busy timeout for other
processes); on PostgreSQL the schema `catalog` of the state database, shared by every
plane. The schema is versioned (hub_store/schema.py): later changes are migrations.
Nothing is cached here: every call reads the database.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hub_store import ids, sql
from hub_store.errors import NotFound
from hub_store.private import make_private_database
from hub_store.records import (
    FileRecord,
    ModelRecord,
    NewVersion,
    ServiceRecord,
    VersionRecord,
    _newest_first,
    pick_latest,
)
from hub_store.schema import MIGRATIONS, SCHEMA_VERSION
from packer.semver import parse_version

__all__ = ["SCHEMA_VERSION", "Catalog", "FileRecord", "ModelRecord", "NewVersion", "ServiceRecord",
           "VersionRecord", "pick_latest", "utc_now"]

CATALOG_FILE = "catalog.sqlite3"
_LEASE = sql.upsert("leases", ("lease_id", "digest", "expires_at"), ("lease_id", "digest"))


def utc_now() -> str:
    """The current time as RFC 3339 UTC, seconds precision."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


_VERSION_COLS = ("service_id, version, sha256, size_bytes, manifest_sha256, unpacked_size, file_count, "
                 "created_at, published_at, signature IS NOT NULL, signer, stable, yanked, zip_sha256, zip_size")


def _version(row: tuple[Any, ...]) -> VersionRecord:
    (service_id, version, sha256, size_bytes, manifest_sha256, unpacked_size, file_count,
     created_at, published_at, signed, signer, stable, yanked, zip_sha256, zip_size) = row
    return VersionRecord(service_id, version, sha256, size_bytes, manifest_sha256, unpacked_size,
                         file_count, created_at, published_at, bool(signed), signer, bool(stable),
                         bool(yanked), zip_sha256, zip_size)


class Catalog:
    """The SQLite catalog; every method is synchronous and thread-safe."""

    def __init__(self, where: str | Path | sql.State):
        """Open (and migrate) the catalog: its SQLite file, or the plane's state."""
        if isinstance(where, sql.State):
            path = where.sqlite_path(CATALOG_FILE)
            self.path = path if path is not None else Path(CATALOG_FILE)
            target: Path | sql.State = where
        else:
            path = self.path = target = Path(where)
        if path is not None:
            make_private_database(path)
        self._db = sql.open_store(target, MIGRATIONS, CATALOG_FILE, pragmas=("foreign_keys=ON",))

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self, *, immediate: bool = True) -> Iterator[sql.Tx]:
        """One transaction (immediate by default: it takes the write lock up front)."""
        with self._db.transaction(immediate=immediate) as tx:
            yield tx

    def _query(self, statement: str, args: tuple = ()) -> list[tuple]:
        return self._db.execute(statement, args).fetchall()

    # -- versions ---------------------------------------------------------------------------

    def add_version(self, new: NewVersion, *, lease_id: str | None = None) -> VersionRecord:
        """Insert a version with its files and models; release `lease_id` in the same transaction.

        Raises sql.IntegrityError (sqlite3's) if the version exists (the caller checks first).
        """
        now = utc_now()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO services VALUES (?,?,?,?,?) ON CONFLICT(service_id) DO UPDATE SET "
                "service_name=excluded.service_name, service_type=excluded.service_type, "
                "port=excluded.port, description=excluded.description",
                (new.service_id, new.service_name, new.service_type, new.port, new.description))
            db.execute(
                "INSERT INTO versions (service_id, version, sha256, size_bytes, manifest_sha256, "
                "unpacked_size, file_count, created_at, published_at, signature, signer, stable) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (new.service_id, new.version, new.sha256, new.size_bytes, new.manifest_sha256,
                 sum(f.size for f in new.files), len(new.files), new.created_at, now,
                 new.signature, new.signer, int(new.stable)))
            db.executemany("INSERT INTO files VALUES (?,?,?,?,?,?)",
                           [(new.service_id, new.version, f.path, f.size, f.mode, f.sha256)
                            for f in new.files])
            db.executemany("INSERT INTO models VALUES (?,?,?,?,?,?)",
                           [(m.model_id, m.model_version, m.model_type, m.service_id, m.version, m.path)
                            for m in new.models])
            if lease_id is not None:
                db.execute("DELETE FROM leases WHERE lease_id=?", (lease_id,))
        return self.get_version(new.service_id, new.version)

    def find_version(self, service_id: str, version: str) -> VersionRecord | None:
        """The exact version, or None."""
        rows = self._query(f"SELECT {_VERSION_COLS} FROM versions WHERE service_id=? AND version=?",
                           (service_id, version))
        return _version(rows[0]) if rows else None

    def get_version(self, service_id: str, version: str) -> VersionRecord:
        """The exact version, or NotFound."""
        record = self.find_version(service_id, version)
        if record is None:
            raise NotFound(f"{service_id}@{version} is not published")
        return record

    def versions(self, service_id: str) -> list[VersionRecord]:
        """All versions of a service, highest SemVer first."""
        rows = self._query(f"SELECT {_VERSION_COLS} FROM versions WHERE service_id=?", (service_id,))
        return _newest_first(_version(r) for r in rows)

    def resolve(self, service_id: str, ref: str) -> VersionRecord:
        """A version or `latest` (highest stable, non-yanked) -> its record, or NotFound."""
        if ref != ids.LATEST:
            return self.get_version(service_id, ref)
        records = self.versions(service_id)
        if not records:
            raise NotFound(f"service {service_id!r} is not published")
        latest = pick_latest(records)
        if latest is None:
            raise NotFound(f"service {service_id!r} has no stable, non-yanked version")
        return latest

    def set_flags(self, service_id: str, version: str, *, stable: bool | None = None,
                  yanked: bool | None = None) -> VersionRecord:
        """Mark a version stable/unstable and yanked/unyanked."""
        with self.transaction() as db:
            if stable is not None:
                cur = db.execute("UPDATE versions SET stable=? WHERE service_id=? AND version=?",
                                 (int(stable), service_id, version))
            if yanked is not None:
                cur = db.execute("UPDATE versions SET yanked=? WHERE service_id=? AND version=?",
                                 (int(yanked), service_id, version))
            if (stable is not None or yanked is not None) and cur.rowcount == 0:
                raise NotFound(f"{service_id}@{version} is not published")
        return self.get_version(service_id, version)

    def set_zip(self, service_id: str, version: str, zip_sha256: str, zip_size: int) -> None:
        """Record the cached .zip export of a version."""
        with self.transaction() as db:
            db.execute("UPDATE versions SET zip_sha256=?, zip_size=? WHERE service_id=? AND version=?",
                       (zip_sha256, zip_size, service_id, version))

    def signature(self, service_id: str, version: str) -> bytes | None:
        """The raw service.json.sig of a version, None when unsigned."""
        rows = self._query("SELECT signature FROM versions WHERE service_id=? AND version=?",
                           (service_id, version))
        if not rows:
            raise NotFound(f"{service_id}@{version} is not published")
        return rows[0][0]

    # -- services, files, models ------------------------------------------------------------

    def services(self) -> list[ServiceRecord]:
        """Every service with its versions, sorted by id."""
        rows = self._query("SELECT service_id FROM services ORDER BY service_id")
        return [self.service(r[0]) for r in rows]

    def service(self, service_id: str) -> ServiceRecord:
        """One service with its versions, or NotFound."""
        rows = self._query("SELECT service_id, service_name, service_type, port, description "
                           "FROM services WHERE service_id=?", (service_id,))
        if not rows:
            raise NotFound(f"service {service_id!r} is not published")
        versions = self.versions(service_id)
        latest = pick_latest(versions)
        service_id, name, service_type, port, description = rows[0]
        return ServiceRecord(service_id, name, service_type, port, description,
                             versions=tuple(versions), latest=latest.version if latest else None)

    def files(self, service_id: str, version: str) -> list[FileRecord]:
        """The files of a version, sorted by path."""
        rows = self._query("SELECT path, size, mode, sha256 FROM files WHERE service_id=? AND version=? "
                           "ORDER BY path", (service_id, version))
        return [FileRecord(*r) for r in rows]

    def file(self, service_id: str, version: str, path: str) -> FileRecord | None:
        """One file of a version, or None."""
        rows = self._query("SELECT path, size, mode, sha256 FROM files WHERE service_id=? AND version=? "
                           "AND path=?", (service_id, version, path))
        return FileRecord(*rows[0]) if rows else None

    def models_of(self, service_id: str, version: str) -> list[ModelRecord]:
        """The models a version provides."""
        rows = self._query("SELECT * FROM models WHERE service_id=? AND version=? ORDER BY model_id",
                           (service_id, version))
        return [ModelRecord(*r) for r in rows]

    def model_ids(self) -> list[str]:
        """Every model id in the catalog, sorted."""
        return [r[0] for r in self._query("SELECT DISTINCT model_id FROM models ORDER BY model_id")]

    def model_versions(self, model_id: str) -> list[tuple[ModelRecord, VersionRecord]]:
        """Every (model, providing service version), highest model version then newest service first."""
        rows = self._query(
            f"SELECT m.model_id, m.model_version, m.model_type, m.service_id, m.version, m.path, "
            f"{', '.join('v.' + c.strip() for c in _VERSION_COLS.split(','))} "
            "FROM models m JOIN versions v ON v.service_id=m.service_id AND v.version=m.version "
            "WHERE m.model_id=?", (model_id,))
        pairs = [(ModelRecord(*r[:6]), _version(r[6:])) for r in rows]
        pairs.sort(key=lambda p: (parse_version(p[0].model_version) if _is_semver(p[0].model_version)
                                  else parse_version("0.0.0"), p[1].published_at), reverse=True)
        return pairs

    def resolve_model(self, model_id: str, ref: str) -> tuple[ModelRecord, VersionRecord]:
        """A model version (or `latest`: from a stable, non-yanked service version) -> its provider."""
        pairs = self.model_versions(model_id)
        if not pairs:
            raise NotFound(f"model {model_id!r} is not published")
        if ref == ids.LATEST:
            usable = [p for p in pairs if p[1].stable and not p[1].yanked]
        else:
            usable = [p for p in pairs if p[0].model_version == ref and not p[1].yanked] or \
                     [p for p in pairs if p[0].model_version == ref]
        if not usable:
            raise NotFound(f"model {model_id}@{ref} is not published")
        return usable[0]

    # -- downloads --------------------------------------------------------------------------

    def count_downloads(self, model_ids: Iterable[str], n: int = 1) -> None:
        """Add `n` downloads to each model."""
        now = utc_now()
        with self.transaction() as db:
            db.executemany("INSERT INTO downloads VALUES (?,?,?) ON CONFLICT(model_id) DO UPDATE "
                           "SET count=downloads.count+excluded.count, last_at=excluded.last_at",
                           [(m, n, now) for m in model_ids])

    def ranking(self, limit: int = 10) -> list[tuple[str, int, str]]:
        """(model_id, downloads, last download time), most downloaded first."""
        return [tuple(r) for r in self._query(
            "SELECT model_id, count, last_at FROM downloads ORDER BY count DESC, model_id LIMIT ?",
            (limit,))]

    # -- GC support -------------------------------------------------------------------------

    def referenced_digests(self) -> set[str]:
        """Every blob digest a version refers to (files, bundles, manifests, zip exports)."""
        rows = self._query(
            "SELECT sha256 FROM files UNION SELECT sha256 FROM versions UNION "
            "SELECT manifest_sha256 FROM versions UNION "
            "SELECT zip_sha256 FROM versions WHERE zip_sha256 IS NOT NULL")
        return {r[0] for r in rows}

    def references(self) -> dict[str, str]:
        """digest -> one place that refers to it (`service@version:path`), for fsck."""
        out: dict[str, str] = {}
        for d, sid, ver, what in self._query(
                "SELECT sha256, service_id, version, path FROM files UNION ALL "
                "SELECT sha256, service_id, version, '(bundle)' FROM versions UNION ALL "
                "SELECT manifest_sha256, service_id, version, '(service.json)' FROM versions UNION ALL "
                "SELECT zip_sha256, service_id, version, '(zip)' FROM versions WHERE zip_sha256 IS NOT NULL"):
            out.setdefault(d, f"{sid}@{ver}:{what}")
        return out

    def lease(self, lease_id: str, digest: str, *, ttl_s: float = 6 * 3600) -> None:
        """Hold `digest` for an upload in progress: GC will not delete it until released or expired."""
        with self.transaction() as db:
            db.execute(_LEASE, (lease_id, digest, time.time() + ttl_s))

    def lease_many(self, lease_id: str, digests: Iterable[str], *, ttl_s: float = 6 * 3600) -> None:
        """Hold several digests under one lease, in one transaction."""
        expires = time.time() + ttl_s
        with self.transaction() as db:
            db.executemany(_LEASE, [(lease_id, d, expires) for d in digests])

    def release(self, lease_id: str) -> None:
        """Drop every digest held by `lease_id`."""
        with self.transaction() as db:
            db.execute("DELETE FROM leases WHERE lease_id=?", (lease_id,))

    def live_leases(self, db: sql.Tx | None = None) -> set[str]:
        """Digests held by unexpired leases (pass `db` to read inside an open transaction)."""
        query, args = "SELECT digest FROM leases WHERE expires_at > ?", (time.time(),)
        rows = db.execute(query, args).fetchall() if db is not None else self._query(query, args)
        return {r[0] for r in rows}

    def is_referenced(self, db: sql.Tx, digest: str) -> bool:
        """True if any version refers to `digest` (inside an open transaction)."""
        return db.execute(
            "SELECT 1 FROM files WHERE sha256=? UNION ALL SELECT 1 FROM versions WHERE sha256=? "
            "OR manifest_sha256=? OR zip_sha256=? LIMIT 1", (digest,) * 4).fetchone() is not None

    def purge_expired_leases(self) -> int:
        """Remove leases past their expiry (left by a crashed upload)."""
        with self.transaction() as db:
            return db.execute("DELETE FROM leases WHERE expires_at <= ?", (time.time(),)).rowcount


def _is_semver(text: str) -> bool:
    try:
        parse_version(text)
    except ValueError:
        return False
    return True
