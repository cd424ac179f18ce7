"""Per-line checkpoints of inference steps (`DATA_DIR/jobs/inference.db`).

Each answered input line is one row (run, step, line number, its output row, failed or not),
so a retried or re-attached attempt skips the lines already done and the step's progress
(done / failed / total) is a count. Rows are written in small transactions by the executor's
writer (a few lines at a time), never one commit per line on the hot path. Synchronous and
thread-safe; callers use `trio.to_thread.run_sync`. On PostgreSQL (`--state`) the schema `inference`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hub_store import make_private_database, sql

SCHEMA = """
CREATE TABLE IF NOT EXISTS lines (
    run_id TEXT NOT NULL,
    step   TEXT NOT NULL,
    line   INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    row    TEXT NOT NULL,
    PRIMARY KEY (run_id, step, line)
);
CREATE TABLE IF NOT EXISTS totals (
    run_id TEXT NOT NULL,
    step   TEXT NOT NULL,
    total  INTEGER NOT NULL,
    PRIMARY KEY (run_id, step)
);
"""
MIGRATIONS = sql.Migrations("inference", (SCHEMA,))
# `row` is quoted: a keyword in PostgreSQL.
_PUT_LINE = sql.upsert("lines", ("run_id", "step", "line", "failed", '"row"'), ("run_id", "step", "line"))



@dataclass(frozen=True)
class Progress:
    """An inference step's lines: answered (`done`, which includes `failed`) of `total`."""

    done: int
    failed: int
    total: int | None  # None until the attempt has read its input


class Checkpoints:
    """The rows answered so far, per run and step."""

    def __init__(self, where: Path | sql.State):
        """Open (and migrate) the checkpoints: their SQLite file, or the plane's state (schema `inference`)."""
        if isinstance(where, Path):
            where.parent.mkdir(parents=True, exist_ok=True)
            make_private_database(where)
        self._lock = threading.Lock()
        self._db = sql.open_store(where, MIGRATIONS, "jobs/inference.db")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def set_total(self, run_id: str, step: str, total: int) -> None:
        """Record how many lines the step's input has."""
        with self._lock:
            self._db.execute(sql.upsert("totals", ("run_id", "step", "total"), ("run_id", "step")),
                             (run_id, step, total))

    def done_lines(self, run_id: str, step: str) -> set[int]:
        """The line numbers (from 0) already answered."""
        with self._lock:
            rows = self._db.execute("SELECT line FROM lines WHERE run_id=? AND step=?", (run_id, step)).fetchall()
        return {r[0] for r in rows}

    def add(self, run_id: str, step: str, rows: Iterable[tuple[int, bool, str]]) -> None:
        """Record answered lines (number, failed, output row JSON) in one transaction."""
        with self._lock:
            self._db.executemany(_PUT_LINE, [(run_id, step, n, int(failed), row) for n, failed, row in rows])

    def progress(self, run_id: str, step: str) -> Progress | None:
        """The step's progress, or None when it never started reading its input."""
        with self._lock:
            total = self._db.execute("SELECT total FROM totals WHERE run_id=? AND step=?", (run_id, step)).fetchone()
            done, failed = self._db.execute("SELECT COUNT(*), COALESCE(SUM(failed), 0) FROM lines "
                                            "WHERE run_id=? AND step=?", (run_id, step)).fetchone()
        if total is None and not done:
            return None
        return Progress(done, failed, total[0] if total is not None else None)

    def rows(self, run_id: str, step: str) -> Iterator[tuple[int, bool, str]]:
        """The answered rows in input order (read at once, so the lock is not held while iterating)."""
        with self._lock:
            rows = self._db.execute("SELECT line, failed, row FROM lines WHERE run_id=? AND step=? ORDER BY line",
                                    (run_id, step)).fetchall()
        return iter([(n, bool(f), r) for n, f, r in rows])
