"""Broadcast steps' shards in the jobs database: one row per (run, step, attempt, shard).

A broadcast attempt runs shard k of N on one node each. Its shard count is fixed by its first
attempt (the matching nodes then); a later attempt (the engine's retry after a shard failed,
timed out or lost its node) re-runs only the shards that have not succeeded yet, with the same
index and total, and records the others as carried over.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hub_store import sql

TABLE = """
CREATE TABLE IF NOT EXISTS job_shards (
    run_id     TEXT NOT NULL,
    step       TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    shard      INTEGER NOT NULL,
    total      INTEGER NOT NULL,
    node       TEXT,
    state      TEXT NOT NULL,
    exit_code  INTEGER,
    reason     TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (run_id, step, attempt, shard)
)
"""
_COLUMNS = "run_id, step, attempt, shard, total, node, state, exit_code, reason, updated_at"
_PUT = sql.upsert("job_shards", _COLUMNS.split(", "), ("run_id", "step", "attempt", "shard"))
# Its own version row in the jobs database (whose `runs` its sweep reads).
MIGRATIONS = sql.Migrations("job_shards", (TABLE,))


@dataclass(frozen=True)
class ShardRecord:
    """One shard of one broadcast attempt: where it ran and how it ended."""

    run_id: str
    step: str
    attempt: int
    shard: int
    total: int
    node: str | None
    state: str
    exit_code: int | None
    reason: str
    updated_at: float

    def to_json(self) -> dict[str, object]:
        """The API's form."""
        return {k: getattr(self, k) for k in ("shard", "total", "attempt", "node", "state", "exit_code", "reason")}


class ShardRecords:
    """Shard rows in the jobs database; synchronous and thread-safe."""

    def __init__(self, where: Path | sql.State):
        """Open the rows: in the jobs database's file (its path), or the plane's state (schema `jobs`)."""
        self._lock = threading.Lock()
        self._db = sql.open_store(where, MIGRATIONS, "jobs.db", guest_of="jobs")

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def put(self, run_id: str, step: str, attempt: int, shard: int, total: int, state: str, *,
            node: str | None = None, exit_code: int | None = None, reason: str = "") -> None:
        """Create or update one shard's row."""
        with self._lock:
            self._db.execute(
                _PUT,
                (run_id, step, attempt, shard, total, node, state, exit_code, reason, time.time()))

    def of(self, run_id: str, step: str | None = None, attempt: int | None = None) -> list[ShardRecord]:
        """The run's shard rows (of one step and attempt, when given), by step, attempt, shard."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM job_shards WHERE run_id=? AND (? IS NULL OR step=?) "
                "AND (? IS NULL OR attempt=?) ORDER BY step, attempt, shard",
                (run_id, step, step, attempt, attempt)).fetchall()
        return [ShardRecord(*r) for r in rows]

    def earlier(self, run_id: str, step: str, attempt: int) -> tuple[int | None, dict[int, ShardRecord]]:
        """The shard total of the step's earlier attempts (None: this is the first that ran
        shards) and the shards that succeeded in them, by index."""
        rows = [r for r in self.of(run_id, step) if r.attempt < attempt]
        if not rows:
            return None, {}
        done = {r.shard: r for r in rows if r.state == "succeeded"}
        return rows[0].total, done

    def sweep(self) -> int:
        """Drop the rows of runs the history limits removed; returns how many."""
        with self._lock:
            return self._db.execute("DELETE FROM job_shards WHERE run_id NOT IN (SELECT run_id FROM runs)").rowcount
