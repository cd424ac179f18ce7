"""The step and attempt half of `RunStore`: their states, attempts' results and notes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from contextlib import AbstractContextManager

from hub_store import sql
from runtime.jobs.errors import IllegalTransition, UnknownJob
from runtime.jobs.records import AttemptRecord, StepRecord
from runtime.jobs.states import ATTEMPT_MOVES, STEP_MOVES, can_move


class StepAttemptStore:
    """Steps and attempts of runs; mixed into `RunStore`, which gives the connection and lock."""

    _lock: threading.RLock
    _db: sql.Database

    def _tx(self) -> AbstractContextManager[sql.Tx]:
        raise NotImplementedError

    def steps(self, run_id: str) -> list[StepRecord]:
        """The run's steps, in the order they were created."""
        with self._lock:
            rows = self._db.execute("SELECT run_id, step, state, attempts, reason FROM steps WHERE run_id=? "
                                    "ORDER BY rowid", (run_id,)).fetchall()
        return [StepRecord(*r) for r in rows]

    def set_step_state(self, run_id: str, step: str, state: str, *, reason: str = "") -> None:
        """Move a step to `state`; IllegalTransition if it cannot go there."""
        with self._tx() as db:
            row = db.execute("SELECT state FROM steps WHERE run_id=? AND step=?", (run_id, step)).fetchone()
            if row is None:
                raise UnknownJob(f"no step {step!r} in run {run_id!r}")
            if not can_move(STEP_MOVES, row[0], state):
                raise IllegalTransition(f"step {step} of run {run_id}", row[0], state)
            db.execute("UPDATE steps SET state=?, reason=? WHERE run_id=? AND step=?", (state, reason, run_id, step))

    def cancel_open(self, run_id: str, *, now: float, reason: str) -> None:
        """Mark the run's unfinished steps and never-dispatched attempts cancelled (a cancelled run)."""
        with self._tx() as db:
            db.execute("UPDATE steps SET state='cancelled', reason=? WHERE run_id=? AND state IN ('waiting', "
                       "'running')", (reason, run_id))
            db.execute("UPDATE attempts SET state='cancelled', reason=?, updated_at=? WHERE run_id=? "
                       "AND state='pending'", (reason, now, run_id))

    def new_attempt(self, run_id: str, step: str, *, now: float) -> int:
        """Create the step's next attempt (pending); returns its number (1 for the first)."""
        with self._tx() as db:
            row = db.execute("SELECT attempts FROM steps WHERE run_id=? AND step=?", (run_id, step)).fetchone()
            if row is None:
                raise UnknownJob(f"no step {step!r} in run {run_id!r}")
            number = row[0] + 1
            db.execute("UPDATE steps SET attempts=? WHERE run_id=? AND step=?", (number, run_id, step))
            db.execute("INSERT INTO attempts VALUES (?, ?, ?, 'pending', NULL, NULL, NULL, '', ?, ?, NULL)",
                       (run_id, step, number, now, now))
        return number

    def dispatch_attempt(self, run_id: str, step: str, *, now: float, epoch: int, start_step: bool = False,
                         sent: bool = True) -> int:
        """The step's next attempt, created and moved to dispatched with the leader epoch in one
        transaction (after moving the waiting step to running, with `start_step`); its number.
        With `sent=False` (a fire prepared ahead) it stays pending until `mark_dispatched`."""
        state = "dispatched" if sent else "pending"
        with self._tx() as db:
            if start_step:
                # The common case (a step just created, waiting with no attempt) in two statements;
                # any other state takes the checked path below, which says what is wrong.
                started = db.execute("UPDATE steps SET state='running', attempts=1 WHERE run_id=? AND step=? "
                                     "AND state='waiting' AND attempts=0", (run_id, step))
                if started.rowcount == 1:
                    db.execute("INSERT INTO attempts VALUES (?, ?, 1, ?, ?, NULL, NULL, '', ?, ?, NULL)",
                               (run_id, step, state, epoch, now, now))
                    return 1
                self.set_step_state(run_id, step, "running")
            number = self.new_attempt(run_id, step, now=now)
            if sent:
                self.set_attempt_state(run_id, step, number, "dispatched", now=now, epoch=epoch)
            else:
                db.execute("UPDATE attempts SET epoch=? WHERE run_id=? AND step=? AND attempt=?",
                           (epoch, run_id, step, number))
        return number

    def mark_dispatched(self, run_id: str, step: str, attempt: int, *, now: float) -> None:
        """A prepared attempt (pending) is about to be sent: dispatched from now on, so a plane that
        dies after this asks its node about it; one already dispatched is left as it is."""
        self.mark_dispatched_many([(run_id, step, attempt)], now=now)

    def mark_dispatched_many(self, keys: Iterable[tuple[str, str, int]], *, now: float) -> None:
        """`mark_dispatched` of every (run id, step, attempt), in one statement."""
        with self._tx() as db:
            db.executemany("UPDATE attempts SET state='dispatched', updated_at=? WHERE run_id=? AND step=? "
                           "AND attempt=? AND state='pending'", [(now, *key) for key in keys])

    def finish_step(self, run_id: str, step: str, state: str) -> None:
        """Move a running step to its end `state`, with its last attempt's reason (one transaction)."""
        with self._tx() as db:
            if can_move(STEP_MOVES, "running", state):  # the common case in one statement
                ended = db.execute("UPDATE steps SET state=?, reason=COALESCE((SELECT reason FROM attempts "
                                   "WHERE run_id=? AND step=? ORDER BY attempt DESC LIMIT 1), '') "
                                   "WHERE run_id=? AND step=? AND state='running'", (state, run_id, step, run_id, step))
                if ended.rowcount == 1:
                    return
            row = db.execute("SELECT reason FROM attempts WHERE run_id=? AND step=? ORDER BY attempt DESC LIMIT 1",
                             (run_id, step)).fetchone()
            self.set_step_state(run_id, step, state, reason=row[0] if row else "")

    def set_attempt_state(self, run_id: str, step: str, attempt: int, state: str, *, now: float,
                          epoch: int | None = None, node: str | None = None,
                          exit_code: int | None = None, reason: str = "") -> None:
        """Move an attempt to `state`, recording its epoch/node/exit code; IllegalTransition if it
        cannot go there (a result for an attempt that already ended is refused, not applied)."""
        with self._tx() as db:
            row = db.execute("SELECT state FROM attempts WHERE run_id=? AND step=? AND attempt=?",
                             (run_id, step, attempt)).fetchone()
            if row is None:
                raise UnknownJob(f"no attempt {attempt} of step {step!r} in run {run_id!r}")
            if not can_move(ATTEMPT_MOVES, row[0], state):
                raise IllegalTransition(f"attempt {attempt} of step {step} of run {run_id}", row[0], state)
            db.execute("UPDATE attempts SET state=?, epoch=COALESCE(?, epoch), node=COALESCE(?, node), "
                       "exit_code=COALESCE(?, exit_code), reason=?, updated_at=? "
                       "WHERE run_id=? AND step=? AND attempt=?",
                       (state, epoch, node, exit_code, reason, now, run_id, step, attempt))

    def note_attempt(self, run_id: str, step: str, attempt: int, reason: str, *, node: str | None = None) -> None:
        """Say why a live attempt waits (`pending: no node with labels gpu=a100`), or which node it
        was sent to; its state stays."""
        with self._tx() as db:
            db.execute("UPDATE attempts SET reason=?, node=COALESCE(?, node) WHERE run_id=? AND step=? AND attempt=? "
                       "AND state IN ('pending', 'dispatched')", (reason, node, run_id, step, attempt))

    def report_result(self, run_id: str, step: str, attempt: int, state: str, *, now: float,
                      node: str | None = None, exit_code: int | None = None, reason: str = "") -> bool:
        """A result an executor reports for an attempt (a node that came back, say): applied if
        the attempt is still live (True); kept beside it, never overriding it, if that attempt
        was already settled, e.g. recorded lost and retried (False)."""
        with self._tx() as db:
            row = db.execute("SELECT state FROM attempts WHERE run_id=? AND step=? AND attempt=?",
                             (run_id, step, attempt)).fetchone()
            if row is None:
                raise UnknownJob(f"no attempt {attempt} of step {step!r} in run {run_id!r}")
            if can_move(ATTEMPT_MOVES, row[0], state):
                db.execute("UPDATE attempts SET state=?, node=COALESCE(?, node), exit_code=COALESCE(?, exit_code), "
                           "reason=?, updated_at=? WHERE run_id=? AND step=? AND attempt=?",
                           (state, node, exit_code, reason, now, run_id, step, attempt))
                return True
            late = json.dumps({"state": state, "node": node, "exit_code": exit_code, "reason": reason, "at": now})
            db.execute("UPDATE attempts SET late_result=? WHERE run_id=? AND step=? AND attempt=?",
                       (late, run_id, step, attempt))
            return False

    def attempts(self, run_id: str, step: str | None = None) -> list[AttemptRecord]:
        """The run's attempts (of one step, when given), by step and number."""
        with self._lock:
            rows = self._db.execute(
                "SELECT run_id, step, attempt, state, epoch, node, exit_code, reason, created_at, updated_at, "
                "late_result "
                "FROM attempts WHERE run_id=? AND (? IS NULL OR step=?) ORDER BY rowid",
                (run_id, step, step)).fetchall()
        return [AttemptRecord(*r) for r in rows]

    def live_attempts(self) -> list[AttemptRecord]:
        """Attempts that were pending, dispatched or running: what a restarted engine must settle."""
        with self._lock:
            rows = self._db.execute(
                "SELECT run_id, step, attempt, state, epoch, node, exit_code, reason, created_at, updated_at, "
                "late_result "
                "FROM attempts WHERE state IN ('pending', 'dispatched', 'running') ORDER BY rowid").fetchall()
        return [AttemptRecord(*r) for r in rows]
