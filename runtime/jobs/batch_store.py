"""The OpenAI batches' table (`DATA_DIR/openai/batches.db`): one row per batch, with its run id.

Synchronous and thread-safe (one connection behind a lock); runtime.jobs.batches calls it from
a thread. Timestamps are Unix seconds, as OpenAI's batch object has them.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from hub_store import make_private_database, sql

FIELDS = ("id", "tenant", "endpoint", "input_file_id", "completion_window", "metadata", "run_id", "job",
          "status", "ending", "errors", "output_file_id", "error_file_id", "total", "completed", "failed",
          "created_at", "in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at",
          "expired_at", "cancelling_at", "cancelled_at")
SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, endpoint TEXT NOT NULL, input_file_id TEXT NOT NULL,
    completion_window TEXT NOT NULL, metadata TEXT, run_id TEXT, job TEXT NOT NULL,
    status TEXT NOT NULL, ending TEXT, errors TEXT, output_file_id TEXT, error_file_id TEXT,
    total INTEGER NOT NULL, completed INTEGER NOT NULL, failed INTEGER NOT NULL,
    created_at INTEGER NOT NULL, in_progress_at INTEGER, expires_at INTEGER, finalizing_at INTEGER,
    completed_at INTEGER, failed_at INTEGER, expired_at INTEGER, cancelling_at INTEGER, cancelled_at INTEGER
);
CREATE INDEX IF NOT EXISTS batches_by_tenant ON batches (tenant, created_at);
"""


def _schema_1(tx: sql.Tx) -> None:
    for statement in sql.split_statements(SCHEMA):
        tx.execute(tx.ddl(statement))
    if tx.dialect == "postgresql":  # listed newest first, ties in insertion order, as SQLite's rowid
        sql.add_rowid(tx, "batches")


MIGRATIONS = sql.Migrations("batches", (_schema_1,))
FINAL = frozenset({"completed", "failed", "expired", "cancelled"})


class BatchStore:
    """Batches as dicts of FIELDS (metadata and errors decoded)."""

    def __init__(self, root: Path, state: sql.State | None = None):
        """Open (and migrate) ROOT/batches.db, or the batches in the plane's PostgreSQL state."""
        where = sql.located(root / "batches.db", state)
        if isinstance(where, Path):
            root.mkdir(parents=True, exist_ok=True)
            make_private_database(where)
        self._lock = threading.Lock()
        self._db = sql.open_store(where, MIGRATIONS, "openai/batches.db")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def insert(self, batch: dict[str, Any]) -> None:
        """Add a new batch."""
        row = _encode(batch)
        with self._lock:
            self._db.execute(f"INSERT INTO batches ({', '.join(FIELDS)}) VALUES ({', '.join('?' * len(FIELDS))})",
                             [row.get(f) for f in FIELDS])

    def update(self, batch_id: str, **changes: Any) -> None:
        """Change some fields of a batch."""
        if not changes:
            return
        row = _encode(changes)
        with self._lock:
            self._db.execute(f"UPDATE batches SET {', '.join(f'{k}=?' for k in row)} WHERE id=?",
                             [*row.values(), batch_id])

    def get(self, batch_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        """A batch (of `tenant`, when given), or None."""
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(FIELDS)} FROM batches WHERE id=? AND (? IS NULL OR tenant=?)",
                                   (batch_id, tenant, tenant)).fetchone()
        return _decode(row) if row is not None else None

    def list(self, *, tenant: str | None = None, open_only: bool = False) -> list[dict[str, Any]]:
        """Batches, newest first (of one tenant; only unfinished ones)."""
        query = f"SELECT {', '.join(FIELDS)} FROM batches WHERE (? IS NULL OR tenant=?)"
        if open_only:
            query += f" AND status NOT IN ({', '.join(repr(s) for s in sorted(FINAL))})"
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created_at DESC, rowid DESC", (tenant, tenant)).fetchall()
        return [_decode(r) for r in rows]


def _encode(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: json.dumps(v) if k in ("metadata", "errors") and v is not None else v for k, v in batch.items()}


def _decode(row: tuple[Any, ...]) -> dict[str, Any]:
    batch = dict(zip(FIELDS, row, strict=True))
    for key in ("metadata", "errors"):
        if batch[key] is not None:
            batch[key] = json.loads(batch[key])
    return batch
