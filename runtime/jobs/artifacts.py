"""Step attempts' artifacts: files a step wrote under `$FLOWCTL_OUTPUT_DIR`, kept by content.

Bytes live in a content-addressed blob store (`hub_store.blobs.BlobStore`): the hub's
when the plane runs the hub role (DATA_DIR/blobs, shared with bundles, or its S3 bucket with
`--blobs s3://...`, which every plane shares), else one of the jobs role's own under
DATA_DIR/jobs/blobs. Each artifact is a row of the `artifacts` table in the
jobs database (DATA_DIR/jobs.db): (run, step, attempt, relative path) -> (sha256, size, shard,
node). A broadcast step's shard k keeps its files under `shard-k/`.

GC safety: with the hub's store, every digest an artifact refers to is held by a lease in the
hub catalog (lease id `jobs-artifacts`, never expiring) taken before the blob is written, so the
hub's GC keeps it; `sweep()` drops the artifacts of runs the history limits removed and releases
(or, in the jobs role's own store, deletes) the blobs nothing refers to any more. A blob
written for an upload that never got recorded is held for `UPLOAD_LEASE_S` only.

Synchronous and thread-safe (its own connection to the jobs database behind a lock); callers
on the event loop use `trio.to_thread.run_sync`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import trio

from hub_store import sql
from hub_store.blobs import BlobInfo, BlobStore, LocalBlobStore
from hub_store.errors import BlobNotFound
from runtime.jobs.errors import JobError

if TYPE_CHECKING:
    from hub_store.catalog import Catalog
    from hub_store.datadir import HubData

log = logging.getLogger("flowctl.jobs")
LEASE_ID = "jobs-artifacts"
SWEEP_S = 60.0
UPLOAD_LEASE_ID = "jobs-artifact-upload"
FOREVER_S = 100 * 365 * 24 * 3600.0
UPLOAD_LEASE_S = 6 * 3600.0
MAX_PATH = 1024
DEFAULT_MAX_FILE_BYTES = 1 << 30  # 1 GiB per file
DEFAULT_MAX_TOTAL_BYTES = 4 << 30  # 4 GiB per step attempt (per shard for broadcast)
DEFAULT_MAX_FILES = 10_000

TABLE = """
CREATE TABLE IF NOT EXISTS artifacts (
    run_id     TEXT NOT NULL,
    step       TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    path       TEXT NOT NULL,
    digest     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    shard      INTEGER,
    node       TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (run_id, step, attempt, path)
)
"""
_COLUMNS = "run_id, step, attempt, path, digest, size, shard, node, created_at"
_PUT = sql.upsert("artifacts", _COLUMNS.split(", "), ("run_id", "step", "attempt", "path"))
# Its own version row in the jobs database (whose `runs` its sweep reads).
MIGRATIONS = sql.Migrations("artifacts", (TABLE,))


class ArtifactError(JobError):
    """An artifact refused: a bad name, too large, a symlink out of the output dir, a bad digest."""


class ArtifactTooLarge(ArtifactError):
    """An artifact (or an attempt's artifacts together) over the configured limit."""


@dataclass(frozen=True)
class Artifact:
    """One file a step attempt produced: where it was, and the blob that holds its bytes."""

    run_id: str
    step: str
    attempt: int
    path: str  # relative, '/'-separated; `shard-K/...` for a broadcast step's shard K
    digest: str  # sha256, bare hex
    size: int
    shard: int | None = None
    node: str | None = None
    created_at: float = 0.0

    def to_json(self) -> dict[str, object]:
        """The API's form."""
        return {"run_id": self.run_id, "step": self.step, "attempt": self.attempt, "path": self.path,
                "sha256": self.digest, "size": self.size, "shard": self.shard, "node": self.node,
                "created_at": self.created_at}


@dataclass(frozen=True)
class ArtifactLimits:
    """How large one artifact, and one attempt's artifacts together, may be."""

    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES
    max_files: int = DEFAULT_MAX_FILES


def check_path(path: str) -> str:
    """`path` if it is a safe relative artifact path (`a/b.txt`), else ArtifactError naming it."""
    parts = path.split("/")
    if (not path or len(path) > MAX_PATH or path.startswith("/") or "\\" in path or "\0" in path
            or any(p in ("", ".", "..") for p in parts) or any(ord(c) < 32 for c in path)):
        raise ArtifactError(f"artifact path {path[:200]!r} is not a plain relative path "
                            "(no '..', '.', empty parts, leading '/', backslash or control characters)")
    return path


def shard_path(shard: int | None, path: str) -> str:
    """Where shard `shard`'s file `path` is kept (`shard-K/path`; `path` itself outside broadcast)."""
    return path if shard is None else f"shard-{shard}/{path}"


class ArtifactStore:
    """Artifacts of step attempts: rows in the jobs database, bytes in a blob store."""

    def __init__(self, db_path: Path | sql.State, blobs: BlobStore, *, catalog: Catalog | None = None,
                 limits: ArtifactLimits | None = None):
        self.blobs, self.catalog = blobs, catalog
        self.limits = limits or ArtifactLimits()
        self._lock = threading.Lock()
        # Rows in the jobs database's file (`db_path`), or in the plane's state (schema `jobs`).
        self._db = sql.open_store(db_path, MIGRATIONS, "jobs.db", guest_of="jobs")

    @classmethod
    def for_plane(cls, data_dir: Path, *, hub: HubData | None = None,
                  limits: ArtifactLimits | None = None, state: sql.State | None = None) -> ArtifactStore:
        """The plane's store: the hub's blobs and catalog when `hub` (a HubData) is given, else
        DATA_DIR/jobs/blobs; rows in DATA_DIR/jobs.db."""
        if hub is not None:
            return cls(sql.located(data_dir / "jobs.db", state), hub.blobs, catalog=hub.catalog, limits=limits)
        return cls(sql.located(data_dir / "jobs.db", state), LocalBlobStore(data_dir / "jobs" / "blobs"),
                   limits=limits)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sql.Tx]:
        with self._lock, self._db.transaction() as tx:
            yield tx

    # -- writing -------------------------------------------------------------------------------

    def _hold(self, digest: str, lease_id: str = LEASE_ID, ttl_s: float = FOREVER_S) -> None:
        if self.catalog is not None:
            self.catalog.lease(lease_id, digest, ttl_s=ttl_s)

    def hold_upload(self, digest: str) -> None:
        """Keep the hub's GC off a blob being uploaded for a while (`record` then holds it for good)."""
        self._hold(digest, UPLOAD_LEASE_ID, UPLOAD_LEASE_S)

    def store_file(self, src: Path, *, expected: str | None = None) -> BlobInfo:
        """The bytes of `src` as a blob (held for an upload's while; `record` makes it an artifact)."""
        with open(src, "rb") as f:
            return self.store_stream(iter(lambda: f.read(1 << 20), b""), expected=expected)

    def store_stream(self, chunks: Iterable[bytes], *, expected: str | None = None,
                     max_bytes: int | None = None) -> BlobInfo:
        """Stream chunks into a blob, checked against `expected` (BlobDigestMismatch) and
        `max_bytes` (ArtifactTooLarge); nothing is kept when either check fails."""
        limit = self.limits.max_file_bytes if max_bytes is None else max_bytes
        with self.blobs.writer(expected) as writer:
            for chunk in chunks:
                if writer.size + len(chunk) > limit:
                    raise ArtifactTooLarge(f"an artifact is larger than the limit of {limit} bytes")
                writer.write(chunk)
            return writer.commit(lease=self.hold_upload)

    def record(self, run_id: str, step: str, attempt: int, files: Iterable[tuple[str, str, int]], *,
               shard: int | None = None, node: str | None = None) -> list[Artifact]:
        """Record (path, digest, size) files as one attempt's artifacts, all or none; each blob
        must be stored with that size. Paths are checked, then prefixed `shard-K/` for a shard."""
        now = time.time()
        rows = [Artifact(run_id, step, attempt, shard_path(shard, check_path(path)), digest, size, shard, node, now)
                for path, digest, size in files]
        if len(rows) > self.limits.max_files:
            raise ArtifactTooLarge(f"{len(rows)} artifacts are more than the limit of {self.limits.max_files}")
        total = sum(r.size for r in rows)
        if total > self.limits.max_total_bytes:
            raise ArtifactTooLarge(f"the artifacts total {total} bytes, over the limit of "
                                   f"{self.limits.max_total_bytes} bytes per attempt")
        for r in rows:
            if r.size > self.limits.max_file_bytes:
                raise ArtifactTooLarge(f"artifact {r.path!r} is {r.size} bytes, over the limit of "
                                       f"{self.limits.max_file_bytes} bytes")
        # One transaction with the leases: a sweep (same lock) cannot release what is being recorded.
        with self._tx() as db:
            for r in rows:
                self._hold(r.digest)
                try:
                    stored = self.blobs.stat(r.digest).size
                except (BlobNotFound, ValueError):
                    raise ArtifactError(f"artifact {r.path!r}: blob {r.digest[:16]}... was never uploaded") from None
                if stored != r.size:
                    raise ArtifactError(f"artifact {r.path!r}: {r.size} bytes announced, {stored} stored")
            db.executemany(_PUT,
                           [(r.run_id, r.step, r.attempt, r.path, r.digest, r.size, r.shard, r.node, r.created_at)
                            for r in rows])
        return rows

    def put_file(self, run_id: str, step: str, attempt: int, path: str, src: Path) -> Artifact:
        """Store the file `src` as artifact `path` of the attempt."""
        check_path(path)
        info = self.store_file(src)
        return self.record(run_id, step, attempt, [(path, info.digest, info.size)])[0]

    def put_bytes(self, run_id: str, step: str, attempt: int, path: str, data: bytes) -> Artifact:
        """Store `data` as artifact `path` of the attempt."""
        check_path(path)
        info = self.store_stream([data])
        return self.record(run_id, step, attempt, [(path, info.digest, info.size)])[0]

    # -- reading -------------------------------------------------------------------------------

    def list(self, run_id: str, step: str | None = None, attempt: int | None = None) -> list[Artifact]:
        """The run's artifacts (of one step and attempt, when given), by step, attempt and path."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM artifacts WHERE run_id=? AND (? IS NULL OR step=?) "
                "AND (? IS NULL OR attempt=?) ORDER BY step, attempt, path",
                (run_id, step, step, attempt, attempt)).fetchall()
        return [Artifact(*r) for r in rows]

    def find(self, run_id: str, step: str, path: str) -> Artifact | None:
        """Artifact `path` of the step's latest succeeded attempt, or None."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {', '.join('x.' + c.strip() for c in _COLUMNS.split(','))} FROM artifacts x "
                "JOIN attempts a ON a.run_id=x.run_id AND a.step=x.step AND a.attempt=x.attempt "
                "WHERE x.run_id=? AND x.step=? AND x.path=? AND a.state='succeeded' "
                "ORDER BY x.attempt DESC LIMIT 1", (run_id, step, path)).fetchone()
        return Artifact(*row) if row else None

    def latest(self, run_id: str, step: str, path: str, attempt: int | None = None) -> Artifact | None:
        """Artifact `path` of the given attempt, else of the latest attempt that has it."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM artifacts WHERE run_id=? AND step=? AND path=? "
                "AND (? IS NULL OR attempt=?) ORDER BY attempt DESC LIMIT 1",
                (run_id, step, path, attempt, attempt)).fetchone()
        return Artifact(*row) if row else None

    def open(self, artifact: Artifact) -> BinaryIO:
        """The artifact's bytes, for reading (BlobNotFound if its blob is gone)."""
        return self.blobs.open(artifact.digest)

    def blob_path(self, artifact: Artifact) -> Path | None:
        """The file holding the artifact's bytes; None when they are in a remote (S3) store."""
        return self.blobs.path(artifact.digest) if isinstance(self.blobs, LocalBlobStore) else None

    # -- history -------------------------------------------------------------------------------

    def sweep(self, *, min_age_s: float = UPLOAD_LEASE_S) -> int:
        """Drop artifacts whose run is gone (history limits) and let their blobs go: released to
        the hub's GC, or deleted from the jobs role's own store (and uploads never recorded
        after `min_age_s`). Returns how many artifacts were dropped."""
        with self._tx() as db:
            gone = db.execute("SELECT DISTINCT digest FROM artifacts WHERE run_id NOT IN "
                              "(SELECT run_id FROM runs)").fetchall()
            dropped = db.execute("DELETE FROM artifacts WHERE run_id NOT IN (SELECT run_id FROM runs)").rowcount
            kept = {r[0] for r in db.execute("SELECT DISTINCT digest FROM artifacts")}
            try:  # a broadcast's shard rows (runtime.jobs.shards) go with their run too
                with self._db.transaction():  # a savepoint: PostgreSQL's transaction survives the error
                    db.execute("DELETE FROM job_shards WHERE run_id NOT IN (SELECT run_id FROM runs)")
            except sqlite3.OperationalError:
                pass  # no broadcast ever ran here: no such table
            loose = [d for (d,) in gone if d not in kept]
            if self.catalog is not None:
                with self.catalog.transaction() as cdb:
                    cdb.executemany("DELETE FROM leases WHERE lease_id=? AND digest=?",
                                    [(LEASE_ID, d) for d in loose])
                return dropped
            # Only blobs older than `min_age_s`: a fresh one may be an upload about to be recorded.
            cutoff = time.time() - min_age_s
            for info in list(self.blobs.iter_blobs()):
                if info.digest not in kept and info.mtime < cutoff:
                    self.blobs.delete(info.digest)
        return dropped


MAX_FILE_ENV = "FLOWCTL_JOBS_ARTIFACT_MAX_BYTES"
MAX_TOTAL_ENV = "FLOWCTL_JOBS_ARTIFACT_MAX_TOTAL_BYTES"


def limits_from_env(environ: Mapping[str, str]) -> ArtifactLimits:
    """The plane's artifact limits: FLOWCTL_JOBS_ARTIFACT_MAX_BYTES (per file, default 1 GiB) and
    FLOWCTL_JOBS_ARTIFACT_MAX_TOTAL_BYTES (per attempt, default 4 GiB); ValueError names a bad one."""
    values: dict[str, int] = {}
    for name, field, default in ((MAX_FILE_ENV, "max_file_bytes", DEFAULT_MAX_FILE_BYTES),
                                 (MAX_TOTAL_ENV, "max_total_bytes", DEFAULT_MAX_TOTAL_BYTES)):
        raw = environ.get(name, "").strip()
        if not raw:
            values[field] = default
        elif not raw.isdigit() or int(raw) <= 0:
            raise ValueError(f"{name}={raw!r} is not a positive number of bytes")
        else:
            values[field] = int(raw)
    return ArtifactLimits(**values)


async def keep_swept(store: ArtifactStore, *, interval: float = SWEEP_S) -> None:
    """`store.sweep()` (and the broadcast shard rows' sweep) every `interval` seconds, until cancelled."""
    while True:
        await trio.sleep(interval)
        try:
            await trio.to_thread.run_sync(store.sweep)
        except Exception:  # a sweep is housekeeping: the next one tries again
            log.exception("jobs: sweeping artifacts failed")
