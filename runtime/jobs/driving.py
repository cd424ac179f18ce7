"""Driving the runs a leading engine started: each in its own task, to its end state."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from runtime.jobs.dispatch import StepExecutor
from runtime.jobs.errors import JobError, LeaseLost
from runtime.jobs.events import Event
from runtime.jobs.metrics import JobMetrics
from runtime.jobs.model import JobSpec
from runtime.jobs.runner import RunContext, drive_run
from runtime.jobs.store import RunStore

log = logging.getLogger("runtime.jobs.engine")  # keeps the name its records always had


@dataclass
class _ActiveRun:
    run_id: str
    job_id: str
    ctx: RunContext | None = None
    scope: trio.CancelScope | None = None
    unprepared: bool = False  # stopped before its due time to go back to pending (a job change)
    ended: trio.Event = field(default_factory=trio.Event)  # its driver is done

    def cancel(self, reason: str) -> None:
        if self.ctx is not None and self.ctx.cancel_reason is None:
            self.ctx.cancel_reason = reason
        if self.scope is not None:
            self.scope.cancel()


class RunDriving:
    """The run-driving half of `JobEngine`, which sets the state declared here."""

    store: RunStore
    executor: StepExecutor
    clock: Callable[[], float]
    rng: random.Random
    metrics: JobMetrics
    epoch: int | None
    _nursery: trio.Nursery | None
    _active: dict[str, _ActiveRun]
    _active_of: dict[str, dict[str, _ActiveRun]]
    _changed: trio.Event
    _wake: trio.Event
    _waiting: set[str]

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def notify(self, event: Event) -> list[str]:
        """Fire every job whose event trigger matches `event` (the engine's)."""
        raise NotImplementedError

    def _start_driver(self, run_id: str, job_id: str, spec: JobSpec, params: dict[str, Any], *,
                      fresh: bool = False, due_at: float | None = None) -> None:
        """Drive a run in a task of its own; one `due_at` ahead of now is prepared now and sent then."""
        assert self._nursery is not None and self.epoch is not None
        now = self.clock()
        not_before = None
        if due_at is not None and due_at > now:
            # On Trio's clock, rounded up to the millisecond: the runs due at one instant share it
            # exactly (runtime.jobs.prepared_sends sends them together), and none starts early.
            not_before = math.ceil((trio.current_time() + due_at - now) * 1000) / 1000
        ctx = RunContext(run_id, spec, params, self.epoch, self.store, self.executor, self._db, self.clock,
                         self.rng, self.metrics, fresh=fresh, due_at=due_at if not_before is not None else None,
                         not_before=not_before)
        active = self._active[run_id] = _ActiveRun(run_id, job_id, ctx, trio.CancelScope())
        self._active_of.setdefault(job_id, {})[run_id] = active
        self._nursery.start_soon(self._drive, active, spec)

    async def _drive(self, active: _ActiveRun, spec: JobSpec) -> None:
        """Drive one run; its failure, of any kind but a lost lease, ends only this run."""
        try:
            await self._drive_run(active, spec)
        except Exception as e:
            if isinstance(e, LeaseLost) or (isinstance(e, ExceptionGroup) and e.subgroup(LeaseLost)):
                raise
            log.exception("run %s: the engine could not drive it", active.run_id)
            self._forget(active)
            with trio.CancelScope(shield=True):
                try:
                    await self._db(self.store.set_run_state, active.run_id, "failed", now=self.clock(),
                                   reason=f"internal error: {e!r}"[:500])
                except JobError:
                    pass  # already ended
            self._notify_changed()
        finally:
            active.ended.set()

    async def _drive_run(self, active: _ActiveRun, spec: JobSpec) -> None:
        assert active.ctx is not None and active.scope is not None
        state = "cancelled"
        with active.scope:
            state = await drive_run(active.ctx)
        run_id, now, reason = active.run_id, self.clock(), ""
        if active.unprepared and active.scope.cancelled_caught:
            if await self._db(self.store.unprepare, run_id):
                self._forget(active)
                return
            active.ctx.cancel_reason = "cancelled as its job changed"  # something of it left after all
        if active.scope.cancelled_caught:
            state, reason = "cancelled", active.ctx.cancel_reason or "cancelled"
            await self._db(self.store.cancel_open, run_id, now=now, reason=reason)
        elif state != "succeeded":  # why it did not: its first step that did not succeed
            for step in await self._db(self.store.steps, run_id):
                if step.state != "succeeded":
                    reason = f"step {step.step!r} {step.state}" + (f": {step.reason}" if step.reason else "")
                    break
        await self._db(self._end_run, run_id, active.job_id, spec, state, now, reason)
        self.metrics.run_finished(spec.tenant, state)
        self._forget(active)
        self._notify_changed()
        if active.job_id in self._waiting:  # a fire of this job waits for this run to end
            self._waiting.discard(active.job_id)
            self._wake.set()
        await self.notify(Event("job_run_finished", spec.tenant, job=spec.name, status=state))

    def _end_run(self, run_id: str, job_id: str, spec: JobSpec, state: str, now: float, reason: str) -> None:
        """Record the run's end and prune the job's history: one store call (two transactions)."""
        self.store.set_run_state(run_id, state, now=now, reason=reason)
        self.store.prune_history(job_id, keep_succeeded=spec.policies.history_succeeded,
                                 keep_failed=spec.policies.history_failed)

    def _forget(self, active: _ActiveRun) -> None:
        self._active.pop(active.run_id, None)
        runs = self._active_of.get(active.job_id, {})
        runs.pop(active.run_id, None)
        if not runs:
            self._active_of.pop(active.job_id, None)

    def _notify_changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
