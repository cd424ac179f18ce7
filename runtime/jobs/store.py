"""The orchestrator's durable state in SQLite (`DATA_DIR/jobs.db`): jobs, runs, steps, attempts.

A scheduled fire's run id is a function of (job, fire time), and `UNIQUE (job_id, fire_time)`
makes the database itself refuse a second run for one fire, whoever asks. Each job keeps
`planned_until`: every fire time up to it has been materialised (or deliberately passed over
by the misfire policy), so a restarted engine continues from there and loses nothing.
State changes follow `runtime.jobs.states` and are checked inside the transaction that makes
them. Synchronous and thread-safe; the engine calls it through `trio.to_thread.run_sync`. On
PostgreSQL (`--state`) the schema `jobs`, shared by the planes; nothing is cached here.
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hub_store import make_private_database, sql
from runtime.jobs.errors import IllegalTransition, UnknownJob
from runtime.jobs.model import JobSpec
from runtime.jobs.records import JobRecord, NewRun, RunRecord
from runtime.jobs.schema import parse_job
from runtime.jobs.states import RUN_MOVES, can_move
from runtime.jobs.step_store import StepAttemptStore
from runtime.jobs.tables import DB_NAME, MIGRATIONS

_JOB_COLUMNS = "job_id, tenant, definition, version, suspended, planned_until, created_at, updated_at"
_RUN_COLUMNS = ("run_id, job_id, tenant, job_name, fire_time, due_at, cause, state, reason, params, "
                "version, created_at, started_at, finished_at")
_FINAL_RUN = ("succeeded", "failed", "timed_out", "cancelled", "skipped")


def scheduled_run_id(job_id: str, fire_time: int) -> str:
    """The run id of a job's scheduled fire: the same (job, fire time) always gives the same id."""
    return "run_" + hashlib.sha256(f"{job_id}@{int(fire_time)}".encode()).hexdigest()[:24]


class RunStore(StepAttemptStore):
    """Durable job, run, step and attempt state; every method is one transaction."""

    def __init__(self, where: Path | sql.State):
        """Open (and migrate) the jobs database: a SQLite file path, or the plane's state."""
        path = where if isinstance(where, Path) else where.sqlite_path(DB_NAME)
        self.state = where if isinstance(where, sql.State) else None  # the shard and artifact rows open here too
        self.path = path if path is not None else Path(DB_NAME)
        if path is not None:
            make_private_database(path)
        self._lock = threading.RLock()
        self._grouped = False  # inside group(): each call is a savepoint of the group's transaction
        self._db = sql.open_store(where, MIGRATIONS, DB_NAME)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sql.Tx]:
        # Inside a group, or a call made of others, the SQL layer makes it a savepoint.
        with self._lock, self._db.transaction() as tx:
            yield tx

    @contextmanager
    def group(self) -> Iterator[None]:
        """Calls made inside (by this thread) commit together at its end, one commit for many
        small transactions; each call stays all-or-nothing (a savepoint). Nothing inside is
        durable, or seen by another connection, before the group ends."""
        with self._lock, self._db.transaction():
            self._grouped = True
            try:
                yield
            finally:
                self._grouped = False

    @contextmanager
    def transaction(self) -> Iterator[sql.Tx]:
        """A write transaction on the jobs database, for a `Lease` kept in the same file."""
        with self._tx() as db:
            yield db

    # -- jobs -------------------------------------------------------------------------------

    def put_job(self, spec: JobSpec, *, now: float) -> tuple[JobRecord, str]:
        """Create or update a job; returns it and "created", "updated" or "unchanged".

        An update whose trigger changed drops the old trigger's future pending runs and plans
        afresh from `now`; runs already started keep the definition they started with.
        """
        with self._tx() as db:
            return self._put_job(db, spec, now)

    def put_jobs(self, specs: Iterable[JobSpec], *, now: float) -> list[tuple[JobRecord, str]]:
        """`put_job` of every spec in one transaction: all applied, or none (an apply of 10,000
        definitions is one commit, not 10,000)."""
        with self._tx() as db:
            return [self._put_job(db, spec, now) for spec in specs]

    def _put_job(self, db: sql.Tx, spec: JobSpec, now: float) -> tuple[JobRecord, str]:
        row = db.execute("SELECT job_id, definition, version FROM jobs WHERE tenant=? AND name=?",
                         (spec.tenant, spec.name)).fetchone()
        if row is None:
            job_id = "job_" + secrets.token_hex(8)
            db.execute("INSERT INTO jobs VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?)",
                       (job_id, spec.tenant, spec.name, spec.document, int(spec.policies.suspend),
                        int(now), now, now))
            change = "created"
        else:
            job_id, old_document, _ = row
            if old_document == spec.document:
                change = "unchanged"
            else:
                old = _spec(old_document, spec.tenant)
                db.execute("UPDATE jobs SET definition=?, version=version+1, suspended=?, updated_at=? "
                           "WHERE job_id=?", (spec.document, int(spec.policies.suspend), now, job_id))
                if old.trigger != spec.trigger:
                    db.execute("DELETE FROM runs WHERE job_id=? AND state='pending' AND fire_time > ?",
                               (job_id, int(now)))
                    db.execute("UPDATE jobs SET planned_until=? WHERE job_id=?", (int(now), job_id))
                change = "updated"
        record = self._job(db, job_id, spec)  # the spec given is the one stored: not parsed again
        assert record is not None
        return record, change

    def documents(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The stored definition (JSON) of each (tenant, name) that exists, in one read."""
        found = {}
        with self._lock:
            for tenant, name in keys:
                row = self._db.execute("SELECT definition FROM jobs WHERE tenant=? AND name=?",
                                       (tenant, name)).fetchone()
                if row is not None:
                    found[tenant, name] = row[0]
        return found

    def job(self, tenant: str, name: str) -> JobRecord:
        """The job `name` of `tenant`; UnknownJob if none."""
        with self._lock:
            row = self._db.execute("SELECT job_id FROM jobs WHERE tenant=? AND name=?", (tenant, name)).fetchone()
            record = self._job(self._db, row[0]) if row else None
        if record is None:
            raise UnknownJob(f"no job {name!r} in tenant {tenant!r}")
        return record

    def job_by_id(self, job_id: str) -> JobRecord | None:
        """The job with this id, or None (deleted)."""
        with self._lock:
            return self._job(self._db, job_id)

    def jobs(self, tenant: str | None = None) -> list[JobRecord]:
        """Every job (of `tenant`, when given), by tenant and name."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE ? IS NULL OR tenant=? "
                                    "ORDER BY tenant, name", (tenant, tenant)).fetchall()
        return [_job_record(row) for row in rows]

    def delete_job(self, tenant: str, name: str) -> None:
        """Remove a job and its runs that have not started; started runs finish and stay listed."""
        with self._tx() as db:
            row = db.execute("SELECT job_id FROM jobs WHERE tenant=? AND name=?", (tenant, name)).fetchone()
            if row is None:
                raise UnknownJob(f"no job {name!r} in tenant {tenant!r}")
            db.execute("DELETE FROM runs WHERE job_id=? AND state='pending'", (row[0],))
            db.execute("DELETE FROM jobs WHERE job_id=?", (row[0],))

    def set_suspended(self, job_id: str, suspended: bool, *, now: float) -> None:
        """Suspend (pending runs are skipped) or resume (fires missed meanwhile are not run)."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET suspended=?, updated_at=? WHERE job_id=?", (int(suspended), now, job_id))
            if suspended:
                db.execute("UPDATE runs SET state='skipped', reason='job suspended', finished_at=? "
                           "WHERE job_id=? AND state='pending'", (now, job_id))
            else:
                db.execute("UPDATE jobs SET planned_until=MAX(planned_until, ?) WHERE job_id=?", (int(now), job_id))

    def _job(self, db: sql.Tx, job_id: str, spec: JobSpec | None = None) -> JobRecord | None:
        row = db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        return None if row is None else _job_record(row, spec)

    # -- runs -------------------------------------------------------------------------------

    def materialise(self, job: JobRecord, runs: Iterable[NewRun], *, planned_until: int | None = None,
                    now: float) -> list[str]:
        """Insert runs for `job` (a scheduled fire already present is left alone) and advance
        its cursor, in one transaction; returns the ids of the runs inserted. A planning call
        (`planned_until` given) for a job updated or suspended since `job` was read does nothing."""
        with self._tx() as db:
            inserted = self._materialise(db, job, runs, planned_until, now)
        return inserted or []

    def materialise_many(self, plans: Iterable[tuple[JobRecord, Iterable[NewRun], int]], *,
                         now: float) -> list[list[str] | None]:
        """`materialise` for several jobs' (job, runs, planned_until) in one transaction: per job
        the ids inserted, or None when it changed since it was read (deleted included)."""
        with self._tx() as db:
            return [self._materialise(db, job, runs, planned_until, now, strict=False)
                    for job, runs, planned_until in plans]

    def _materialise(self, db: sql.Tx, job: JobRecord, runs: Iterable[NewRun],
                     planned_until: int | None, now: float, *, strict: bool = True) -> list[str] | None:
        row = db.execute("SELECT version, suspended FROM jobs WHERE job_id=?", (job.job_id,)).fetchone()
        if row is None:
            if not strict:
                return None
            raise UnknownJob(f"job {job.spec.name!r} of tenant {job.spec.tenant!r} was deleted")
        if planned_until is not None and (row[0] != job.version or row[1]):
            return None  # planned from a definition that changed meanwhile: the next pass replans
        inserted: list[str] = []
        for run in runs:
            run_id = (scheduled_run_id(job.job_id, run.fire_time) if run.fire_time is not None
                      else "run_" + secrets.token_hex(12))
            cursor = db.execute(
                "INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, job.job_id, job.spec.tenant, job.spec.name, run.fire_time, run.due_at, run.cause,
                 run.state, run.reason, run.params, job.spec.document, job.version, now,
                 None, now if run.state != "pending" else None))
            if cursor.rowcount:
                inserted.append(run_id)
        if planned_until is not None:
            db.execute("UPDATE jobs SET planned_until=MAX(planned_until, ?) WHERE job_id=?",
                       (planned_until, job.job_id))
        return inserted

    def job_keys(self) -> list[tuple[str, int, int, int]]:
        """Every job's (job_id, version, suspended, planned_until): what a cache compares to see change."""
        with self._lock:
            return self._db.execute("SELECT job_id, version, suspended, planned_until FROM jobs").fetchall()

    def next_due_after(self, after: float) -> float | None:
        """When the earliest pending run due after `after` is due, or None."""
        with self._lock:
            return self._db.execute("SELECT MIN(due_at) FROM runs WHERE state='pending' AND due_at > ?",
                                    (after,)).fetchone()[0]

    def start_runs(self, starts: Iterable[tuple[str, JobRecord]], *, now: float) -> list[str]:
        """Move pending runs to running, each with its job's steps and current definition, in one
        transaction; returns the ids moved (a run no longer pending, cancelled meanwhile, is left)."""
        started = []
        with self._tx() as db:
            for run_id, job in starts:
                row = db.execute("SELECT state FROM runs WHERE run_id=?", (run_id,)).fetchone()
                if row is None or not can_move(RUN_MOVES, row[0], "running"):
                    continue
                db.execute("UPDATE runs SET state='running', reason='', started_at=COALESCE(started_at, ?), "
                           "finished_at=NULL, definition=?, version=? WHERE run_id=?",
                           (now, job.spec.document, job.version, run_id))
                for step in job.spec.steps:
                    db.execute("INSERT OR IGNORE INTO steps VALUES (?, ?, 'waiting', 0, '')", (run_id, step.name))
                started.append(run_id)
        return started

    def unprepare(self, run_id: str) -> bool:
        """Put a running run of which nothing was sent (no attempt beyond pending: a fire prepared
        ahead of its due time) back to pending, without the steps and attempts its start made, so a
        job change, or the misfire policy after a restart, treats it as any pending run; False when
        it is not such a run."""
        with self._tx() as db:
            moved = db.execute("UPDATE runs SET state='pending', started_at=NULL, reason='' "
                               "WHERE run_id=? AND state='running' AND NOT EXISTS (SELECT 1 FROM attempts "
                               "WHERE attempts.run_id=runs.run_id AND attempts.state != 'pending')", (run_id,))
            if moved.rowcount != 1:
                return False
            db.execute("DELETE FROM attempts WHERE run_id=?", (run_id,))
            db.execute("DELETE FROM steps WHERE run_id=?", (run_id,))
        return True

    def run(self, run_id: str) -> RunRecord:
        """The run `run_id`; UnknownJob if none."""
        with self._lock:
            row = self._db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            raise UnknownJob(f"no run {run_id!r}")
        return _run(row)

    def run_spec(self, run_id: str) -> JobSpec:
        """The definition the run was materialised with (an update never changes it)."""
        with self._lock:
            row = self._db.execute("SELECT definition, tenant FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            raise UnknownJob(f"no run {run_id!r}")
        return _spec(row[0], row[1])

    def runs(self, *, job_id: str | None = None, tenant: str | None = None, job_name: str | None = None,
             states: Iterable[str] | None = None, due_before: float | None = None, limit: int = 1000,
             newest_first: bool = False) -> list[RunRecord]:
        """Runs filtered by job (id, or tenant and name), states and due time; oldest due first,
        or newest first for listings."""
        clauses: list[str] = ["1=1"]
        args: list[object] = []
        for column, value in (("job_id", job_id), ("tenant", tenant), ("job_name", job_name)):
            if value is not None:
                clauses.append(f"{column}=?")
                args.append(value)
        if states is not None:
            states = list(states)
            clauses.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(states)
        if due_before is not None:
            clauses.append("due_at <= ?")
            args.append(due_before)
        order = "due_at DESC, created_at DESC" if newest_first else "due_at, created_at"
        with self._lock:
            rows = self._db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE {' AND '.join(clauses)} "
                                    f"ORDER BY {order} LIMIT ?", (*args, limit)).fetchall()
        return [_run(r) for r in rows]

    def set_run_state(self, run_id: str, state: str, *, now: float, reason: str = "",
                      steps: Iterable[str] = (), job: JobRecord | None = None) -> None:
        """Move a run to `state` (IllegalTransition if it cannot go there); starting it creates
        `steps` and, given the `job`, takes its current definition as the run's own."""
        with self._tx() as db:
            row = db.execute("SELECT state FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if row is None:
                raise UnknownJob(f"no run {run_id!r}")
            if not can_move(RUN_MOVES, row[0], state):
                raise IllegalTransition(f"run {run_id}", row[0], state)
            db.execute("UPDATE runs SET state=?, reason=?, started_at=COALESCE(started_at, ?), finished_at=? "
                       "WHERE run_id=?", (state, reason, now if state == "running" else None,
                                          now if state in _FINAL_RUN else None, run_id))
            if job is not None:
                db.execute("UPDATE runs SET definition=?, version=? WHERE run_id=?",
                           (job.spec.document, job.version, run_id))
            for step in steps:
                db.execute("INSERT OR IGNORE INTO steps VALUES (?, ?, 'waiting', 0, '')", (run_id, step))

    def prune_history(self, job_id: str, *, keep_succeeded: int, keep_failed: int) -> int:
        """Delete the oldest finished runs beyond the job's history limits; returns how many."""
        removed = 0
        with self._tx() as db:
            for states, keep in ((("succeeded",), keep_succeeded),
                                 (("failed", "timed_out", "cancelled", "skipped"), keep_failed)):
                marks = ",".join("?" * len(states))
                # `+state`: by the job's rows (a few), never by every run in that state (all jobs')
                old = [r[0] for r in db.execute(
                    f"SELECT run_id FROM runs WHERE job_id=? AND +state IN ({marks}) "
                    "ORDER BY finished_at DESC, created_at DESC LIMIT -1 OFFSET ?", (job_id, *states, keep))]
                for run_id in old:
                    for table in ("attempts", "steps", "runs"):
                        db.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))
                removed += len(old)
        return removed


@functools.lru_cache(maxsize=32_768)  # each pass reads every job; a definition is parsed once (10,000 jobs fit)
def _spec(document: str, tenant: str) -> JobSpec:
    return parse_job(json.loads(document), tenant=tenant)


def _job_record(row: tuple[Any, ...], spec: JobSpec | None = None) -> JobRecord:
    return JobRecord(row[0], spec or _spec(row[2], row[1]), row[3], bool(row[4]), row[5], row[6], row[7])


def _run(row: tuple[Any, ...]) -> RunRecord:
    values = list(row)
    values[9] = json.loads(values[9])
    return RunRecord(*values)
