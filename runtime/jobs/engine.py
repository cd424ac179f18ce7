"""The firing engine: plans fire times ahead, materialises runs, applies the concurrency,
misfire and deadline policies, and drives runs through a `StepExecutor`, as the lease holder.

Timing, all in wall-clock seconds from `clock`:
- Each pass plans the timed jobs whose next fire entered the window (up to `now + window_s`;
  a heap by next fire, `runtime.jobs.planner`) and stores their cursors with the runs they
  made, all in one transaction; scheduled run ids are f(job, fire time), so whatever crashes
  where, a fire is materialised at most once (the store's UNIQUE constraint refuses a second).
- The runs due by now are read by an index, not scanned, and moved to running together in one
  transaction; store calls go to a worker thread in batches (`runtime.jobs.offload`).
- Fires are prepared ahead: a pass runs `prepare_s` before the next due time and starts the runs
  due by then (recorded started at their due time); each run's first attempt is created, its node
  chosen and noted, and only the send waits for the due time (`AttemptOrder.not_before`). A cron
  burst's bookkeeping is then done before the burst, not in its latency. A run whose job has an
  active run (or several due at once) under forbid or replace is not prepared: its policy is
  decided at its due time, as before.
- A scheduled run more than `misfire_grace_s` late (the plane was down, or too busy) is a
  misfire. Per job, the policy keeps the latest 0 (skip), 1 (run_once) or N (catch_up) of
  them and records the others `skipped`; fires missed before the cursor are not even
  materialised beyond those N, however long the outage.
- A run that cannot start within the starting deadline of its due time is `skipped`.
- Concurrency, when a run of the job is already active: allow starts it too, forbid records
  it `skipped`, replace cancels the active one and starts it. Fires kept by the misfire
  policy wait for the active run instead, so catching up never skips itself.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Any

import trio

from runtime.exception_groups import collapse, describe, leaves
from runtime.heap import freeze_long_lived
from runtime.jobs.dispatch import StepExecutor
from runtime.jobs.driving import _ActiveRun
from runtime.jobs.errors import IllegalTransition, JobError, LeaseLost
from runtime.jobs.events import Event, matches
from runtime.jobs.lease import Lease
from runtime.jobs.metrics import JobMetrics
from runtime.jobs.model import EventTrigger, JobSpec
from runtime.jobs.offload import BatchedOffload
from runtime.jobs.planner import Planner
from runtime.jobs.schema import resolve_parameters
from runtime.jobs.starting import RunStarting
from runtime.jobs.store import JobRecord, NewRun, RunRecord, RunStore

DEFAULT_WINDOW_S = 5.0
DEFAULT_TICK_S = 1.0
DEFAULT_MISFIRE_GRACE_S = 5.0
DEFAULT_PREPARE_S = 0.2  # measured: 10-50 ms of plane work for a 200-run burst on two cores
# How blocking store calls leave the event loop: a worker thread, unless a test runs them inline.
# Only the large ones do (whole tables, a window's plan); the many small per-run calls run on the
# loop (`runtime.jobs.offload`).
Offload = Callable[[Callable[[], Any]], Awaitable[Any]]
SYNC_LATE_TICKS = 3  # the job cache's sync waits for a pass without runs to start this many ticks at most
FINAL_RUN_STATES = frozenset({"succeeded", "failed", "timed_out", "cancelled", "skipped"})

log = logging.getLogger("flowctl.jobs")


class JobEngine(RunStarting):
    """Fires jobs and drives their runs while holding the job lease."""

    def __init__(self, store: RunStore, executor: StepExecutor, lease: Lease, *,
                 clock: Callable[[], float] = time.time, window_s: float = DEFAULT_WINDOW_S,
                 tick_s: float = DEFAULT_TICK_S, misfire_grace_s: float = DEFAULT_MISFIRE_GRACE_S,
                 rng: random.Random | None = None, offload: Offload | None = None,
                 metrics: JobMetrics | None = None, prepare_s: float = DEFAULT_PREPARE_S):
        self.store, self.executor, self.lease, self.clock = store, executor, lease, clock
        self.window_s, self.tick_s, self.misfire_grace_s = window_s, tick_s, misfire_grace_s
        self.prepare_s = prepare_s
        self.rng = rng or random.Random()
        self.metrics = metrics or JobMetrics()
        self.epoch: int | None = None
        self._offload = offload or BatchedOffload(store.group)
        self._inline = offload or BatchedOffload(store.group, inline=True)
        self._active: dict[str, _ActiveRun] = {}
        self._active_of: dict[str, dict[str, _ActiveRun]] = {}  # job id -> its active runs
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        self._changed = trio.Event()
        self.planner = Planner(window_s, misfire_grace_s)
        self._synced_at = -float("inf")
        self._waiting: set[str] = set()  # jobs with a due run waiting for an active one to end
        self._changing: Counter[tuple[str, str]] = Counter()  # jobs being changed: none prepared ahead

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A small store call (one run's, one job's): on the event loop."""
        return await self._inline(partial(fn, *args, **kwargs))

    async def _db_large(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A store call over many rows: in a worker thread."""
        return await self._offload(partial(fn, *args, **kwargs))

    # -- leading ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Wait for the lease, resume the runs a previous engine left, then fire until cancelled;
        `task_status.started(epoch)` once leading.

        Cancellation: runs in flight are left as they are in the store (their attempts
        dispatched or running), for the next engine to re-attach or record lost.
        Error handling: LeaseLost when the lease is lost or an executor fences this epoch off.
        """
        epoch = await self.lease.acquire()
        self.epoch = epoch
        try:
            with collapse(), _lease_lost_once():
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._keep_lease, epoch)
                    running = await self._db_large(self.store.runs, states=["running"], limit=1_000_000)
                    # Runs of which nothing was sent (prepared ahead, or started just before the
                    # previous engine stopped) are pending again: the policies decide on them anew.
                    unsent = set(await self._db_large(_unprepare_all, self.store, [r.run_id for r in running]))
                    for run in (r for r in running if r.run_id not in unsent):
                        # One prepared ahead by the previous engine still waits for its due time.
                        self._start_driver(run.run_id, run.job_id, await self._db(self.store.run_spec, run.run_id),
                                           run.params, due_at=run.due_at)
                    nursery.start_soon(self._fire_loop)
                    task_status.started(epoch)
        finally:
            self._nursery, self.epoch = None, None
            self._active.clear()
            self._active_of.clear()
            with trio.CancelScope(shield=True):
                try:
                    await self.lease.release(epoch)
                except Exception as exc:  # the store is away: the lease then simply runs out
                    log.warning("jobs: could not release the lease of epoch %d: %s", epoch, describe(exc))

    async def _keep_lease(self, epoch: int) -> None:
        # While the store does not answer (a database restart), lead on only as long as the last
        # renewal lasts: no other holder can take the lease before then, and epochs fence after.
        valid_until = trio.current_time() + self.lease.ttl_s
        pause = self.lease.ttl_s / 3
        while True:
            await trio.sleep(pause)
            asked = trio.current_time()
            try:
                renewed = await self.lease.renew(epoch)
            except Exception as exc:
                if trio.current_time() >= valid_until:
                    raise LeaseLost(f"the job lease of epoch {epoch} ran out while the store was away: "
                                    f"{describe(exc)}") from None
                log.warning("jobs: could not renew the lease (retrying): %s", describe(exc))
                pause = min(1.0, self.lease.ttl_s / 10)
                continue
            if not renewed:
                raise LeaseLost(f"the job lease of epoch {epoch} was lost")
            valid_until, pause = asked + self.lease.ttl_s, self.lease.ttl_s / 3

    async def _fire_loop(self) -> None:
        while True:
            self._wake = trio.Event()
            now = self.clock()
            if not self.planner.loaded:
                await self._sync_jobs(now)
            # Fires already due (or about to be) are planned first (after an outage the misfire
            # policy must see them beside the runs left pending), then runs due start, then the
            # window ahead.
            await self._plan(now, math.floor(now + self.prepare_s))
            next_due = await self._start_due(now)
            # The sync reads every job's key (10,000 rows, in a thread holding the store): not in
            # a pass that just started a burst, whose runs are about to be dispatched; in the
            # planning pass half a second later (at most SYNC_LATE_TICKS ticks late).
            since = now - self._synced_at
            if since < 0 or since >= self.tick_s * (1 if not self.metrics.queue_depth else SYNC_LATE_TICKS):
                await self._sync_jobs(now)
            next_plan, new_due = await self._plan(now)
            if new_due is not None:
                new_due -= self.prepare_s
            wake_at = min(t for t in (next_plan, next_due, new_due, now + self.tick_s) if t is not None)
            with trio.move_on_after(max(0.0, wake_at - self.clock())):
                await self._wake.wait()

    # -- planning and starting --------------------------------------------------------------

    async def _sync_jobs(self, now: float) -> None:
        """Bring the job cache up to date with the table (another plane may have written it)."""
        self._synced_at = now
        changed = self.planner.stale(await self._db_large(self.store.job_keys)) if self.planner.loaded else None
        if changed is None or len(changed) > 100:
            jobs = await self._db_large(self.store.jobs)
            self.planner.load(jobs)
            freeze_long_lived(len(jobs))  # the cache lives on: full collections need not walk it
            return
        for job_id in changed:
            await self._refetch(job_id)

    async def _refetch(self, job_id: str) -> None:
        job = await self._db(self.store.job_by_id, job_id)
        if job is None:
            self.planner.drop(job_id)
        else:
            self.planner.put(job)

    async def _plan(self, now: float, upto: int | None = None) -> tuple[float | None, float | None]:
        """Materialise the fires up to `now + window_s` of every timed job that has one (all in
        one transaction); returns when the next fire beyond that enters the window (so a quiet
        engine sleeps until then). A job with no fire in the window costs no write: its cursor
        moves only with the runs it makes. With `upto`, only the jobs with a fire by then.
        Also returns when the earliest run it made is due."""
        horizon = int(now + self.window_s - self.planner.shift_s)  # see Planner.shift_s
        due = self.planner.due(horizon if upto is None else upto)
        earliest: float | None = None
        if due:
            plans = [(job, self.planner.new_runs(job, now, horizon), horizon) for job in due]
            earliest = min((run.due_at for _, runs, _ in plans for run in runs), default=None)
            results = await self._db_large(self.store.materialise_many, plans, now=now)
            for job, inserted in zip(due, results, strict=True):
                if inserted is None:  # changed since it was read: read it again, it replans
                    await self._refetch(job.job_id)
                else:
                    self.planner.planned(job, horizon)
        return self.planner.next_plan_at(), earliest

    # -- what the API and the plane call ----------------------------------------------------

    async def apply(self, spec: JobSpec) -> tuple[JobRecord, str]:
        """Create or update a job ("created"/"updated"/"unchanged"); takes effect on the next pass."""
        async with self._changing_jobs([(spec.tenant, spec.name)]):
            result = await self._db(self.store.put_job, spec, now=self.clock())
            self.planner.put(result[0])
        self._wake.set()
        return result

    async def apply_many(self, specs: list[JobSpec]) -> list[tuple[JobRecord, str]]:
        """`apply` of every spec in one transaction (off the loop), and one engine pass after."""
        async with self._changing_jobs((spec.tenant, spec.name) for spec in specs):
            results: list[tuple[JobRecord, str]] = await self._db_large(self.store.put_jobs, specs,
                                                                        now=self.clock())
            for record, _ in results:
                self.planner.put(record)
        freeze_long_lived(len(results))
        self._wake.set()
        return results

    async def trigger(self, tenant: str, name: str, params: dict[str, Any] | None = None, *,
                      cause: str = "manual") -> str:
        """Start a run of a job now with parameter overrides; returns its run id."""
        job = await self._db(self.store.job, tenant, name)
        values = resolve_parameters(job.spec, params)
        (run_id,) = await self._db(self.store.materialise, job,
                                   [NewRun(self.clock(), cause, params=json.dumps(values))], now=self.clock())
        self._wake.set()
        return run_id

    async def notify(self, event: Event) -> list[str]:
        """Fire every job whose event trigger matches `event`; returns the runs started."""
        started = []
        if self.planner.loaded:  # the event-triggered jobs the cache knows (synced every tick)
            jobs = sorted((j for j in self.planner.on_event.values() if event.tenant in (None, j.spec.tenant)),
                          key=lambda j: (j.spec.tenant, j.spec.name))
        else:
            jobs = await self._db_large(self.store.jobs, event.tenant)
        for job in jobs:
            trigger = job.spec.trigger
            if isinstance(trigger, EventTrigger) and not job.suspended and matches(trigger, event):
                started.append(await self.trigger(job.spec.tenant, job.spec.name, cause=f"event:{event.kind}"))
        return started

    async def delete(self, tenant: str, name: str) -> None:
        """Remove a job and its pending runs; runs already started finish and stay listed."""
        job = await self._db(self.store.job, tenant, name)
        async with self._changing_jobs([(tenant, name)]):
            await self._db(self.store.delete_job, tenant, name)
            self.planner.drop(job.job_id)

    async def set_suspended(self, tenant: str, name: str, suspended: bool) -> None:
        """Suspend a job (its pending runs are skipped) or resume it (without the fires missed)."""
        job = await self._db(self.store.job, tenant, name)
        async with self._changing_jobs([(tenant, name)]):
            await self._db(self.store.set_suspended, job.job_id, suspended, now=self.clock())
            await self._refetch(job.job_id)

    async def cancel(self, run_id: str, *, reason: str = "cancelled by request") -> RunRecord:
        """Cancel a pending or running run and wait until it is recorded cancelled."""
        run = await self._db(self.store.run, run_id)
        if run.state == "pending":
            await self._db(self.store.set_run_state, run_id, "cancelled", now=self.clock(), reason=reason)
            self._notify_changed()
        elif run_id in self._active:
            self._active[run_id].cancel(reason)
        elif run.state == "running":
            raise JobError(f"run {run_id!r} is not driven by this engine (is it the leader?)")
        else:
            raise IllegalTransition(f"run {run_id}", run.state, "cancelled")
        return await self.wait_run(run_id)

    @asynccontextmanager
    async def _changing_jobs(self, names: Iterable[tuple[str, str]]) -> AsyncIterator[None]:
        """While jobs (tenant, name) change: none of their runs is prepared ahead, and those already
        prepared whose due time has not come (nothing of them sent) are put back to pending first,
        so the change treats them as it treats pending runs (updated, skipped, removed)."""
        names = set(names)
        self._changing.update(names)
        try:
            now = trio.current_time()
            prepared = [run for run in self._active.values() if run.ctx is not None
                        and (run.ctx.spec.tenant, run.ctx.spec.name) in names
                        and run.ctx.not_before is not None and now < run.ctx.not_before]
            for run in prepared:
                run.unprepared = True
                if run.scope is not None:
                    run.scope.cancel()
            for run in prepared:
                await run.ended.wait()
            yield
        finally:
            self._changing.subtract(names)
            self._changing += Counter()  # drops the names at zero
            self._wake.set()  # the runs held back are prepared again, under the change

    async def wait_run(self, run_id: str) -> RunRecord:
        """Wait until run `run_id` has ended (the caller bounds the wait); returns it."""
        while True:
            changed = self._changed
            run = await self._db(self.store.run, run_id)
            if run.state in FINAL_RUN_STATES:
                return run
            await changed.wait()


def _unprepare_all(store: RunStore, run_ids: list[str]) -> list[str]:
    return [run_id for run_id in run_ids if store.unprepare(run_id)]


@contextmanager
def _lease_lost_once() -> Iterator[None]:
    """Several drivers may learn of the lost lease at once: report it once, as LeaseLost."""
    try:
        yield
    except BaseExceptionGroup as group:
        lost = group.subgroup(LeaseLost)
        if lost is not None and group.subgroup(lambda e: not isinstance(e, LeaseLost | trio.Cancelled)) is None:
            raise next(leaves(lost)) from None
        raise

