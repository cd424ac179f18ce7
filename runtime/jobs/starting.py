"""Starting the runs that are due: the starting deadline, misfire, concurrency policies, and
fires prepared ahead of their due time (see `runtime.jobs.engine`'s docstring)."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from runtime.jobs.driving import RunDriving
from runtime.jobs.errors import JobError
from runtime.jobs.planner import Planner, misfire_keep
from runtime.jobs.store import JobRecord, RunRecord, RunStore

START_CHUNK = 250  # runs started (or skipped) per store call


class RunStarting(RunDriving):
    """The run-starting half of `JobEngine` (over its run-driving half), which sets the state
    declared here."""

    store: RunStore
    planner: Planner
    prepare_s: float
    misfire_grace_s: float
    _changing: Counter[tuple[str, str]]

    async def _start_due(self, now: float) -> float | None:
        """Start (or skip) every run due by `now`, and prepare those due within `prepare_s`;
        returns when the next pass should run (a run to prepare, or one deferred to its due time)."""
        upto = now + self.prepare_s
        due = await self._db(self.store.runs, states=["pending"], due_before=upto, limit=1_000_000)
        by_job: dict[str, list[RunRecord]] = {}
        for run in due:
            by_job.setdefault(run.job_id, []).append(run)
        self.metrics.queue_depth = sum(1 for run in due if run.due_at <= now)
        batch: list[tuple[RunRecord, JobRecord]] = []
        skips: list[tuple[RunRecord, str]] = []
        deferred: float | None = None  # the earliest run left for a pass at its due time
        for job_id, runs in by_job.items():
            job = self.planner.jobs.get(job_id) or await self._db(self.store.job_by_id, job_id)
            if job is None:
                continue
            later = self._not_prepared(job, runs, now)
            if later:
                runs = [run for run in runs if run not in later]
                soonest = min(run.due_at for run in later)
                deferred = soonest if deferred is None else min(deferred, soonest)
            if runs:
                await self._start_job_runs(job, runs, now, batch, skips)
        # A few store calls for all (a backlog after an outage skips or starts thousands), in
        # chunks: each holds the event loop, which the nodes' heartbeats need now and then.
        for first in range(0, len(skips), START_CHUNK):
            await self._db(self._skip_all, skips[first:first + START_CHUNK], now)
        for run, _ in skips:
            self.metrics.run_finished(run.tenant, "skipped")
        if skips:
            self._notify_changed()
        # A prepared run is recorded started at its due time: when it is sent.
        by_start: dict[float, list[tuple[RunRecord, JobRecord]]] = {}
        for run, job in batch:
            by_start.setdefault(max(now, run.due_at), []).append((run, job))
        for at, runs_at in sorted(by_start.items()):
            for first in range(0, len(runs_at), START_CHUNK):
                chunk = runs_at[first:first + START_CHUNK]
                started = set(await self._db(self.store.start_runs, [(r.run_id, job) for r, job in chunk], now=at))
                for run, job in chunk:
                    if run.run_id in started:
                        self._began(run, job)
        following = await self._db(self.store.next_due_after, upto)
        wakes = [t for t in (following - self.prepare_s if following is not None else None, deferred) if t is not None]
        return min(wakes, default=None)

    def _not_prepared(self, job: JobRecord, runs: list[RunRecord], now: float) -> list[RunRecord]:
        """The runs not yet due that must wait (for their due time, or the end of a change to their
        job): those whose concurrency policy (forbid, replace) has a decision to make then, as
        another run of the job is active, waits, or is due with them. Under allow, or alone, a run
        is prepared."""
        ahead = [run for run in runs if run.due_at > now]
        if ahead and (job.spec.tenant, job.spec.name) in self._changing:
            return ahead  # prepared once the change is made, under it
        if not ahead or job.spec.policies.concurrency == "allow":
            return []
        if len(runs) == 1 and not self._active_of.get(job.job_id) and job.job_id not in self._waiting:
            return []
        return ahead

    async def _start_job_runs(self, job: JobRecord, runs: list[RunRecord], now: float,
                              batch: list[tuple[RunRecord, JobRecord]], skips: list[tuple[RunRecord, str]]) -> None:
        """Apply the job's policies to its due runs: the runs to start go in `batch` (started with
        the others in one transaction), those to skip in `skips`; only several runs of one job
        under `replace` or catching up start here, one at a time, in order."""
        policies = job.spec.policies
        deadline = policies.starting_deadline
        live = []
        for run in runs:
            if deadline is not None and now > run.due_at + deadline:
                skips.append((run, f"missed its starting deadline of {deadline:g} s "
                                   f"(due {_iso(run.due_at)}, {now - run.due_at:.0f} s late)"))
            else:
                live.append(run)
        missed = sorted((r for r in live if r.cause == "schedule" and r.due_at < now - self.misfire_grace_s),
                        key=lambda r: r.due_at)
        keep = misfire_keep(job.spec)
        kept = {r.run_id for r in missed[len(missed) - keep:]} if keep else set()
        for run in missed:
            if run.run_id not in kept:
                skips.append((run, f"misfire: fired at {_iso(run.due_at)} while the engine was not "
                                   f"running; policy {policies.misfire} keeps {keep}"))
        batched: str | None = None  # a run of this job batched in this pass: as good as active
        # One at a time where order matters: replace cancels the run before, catch-up runs in fire order.
        sequential = len(live) > 1 and (policies.concurrency == "replace" or len(kept) > 1)
        for run in live:
            if run in missed and run.run_id not in kept:
                continue
            active = list(self._active_of.get(job.job_id, {}).values())  # not a scan: a backlog is large
            if (active or batched) and policies.concurrency != "allow":
                if run.run_id in kept:
                    self._waiting.add(job.job_id)
                    continue  # a caught-up fire waits for the active run
                if policies.concurrency == "forbid":
                    skips.append((run, f"concurrency forbid: run {active[0].run_id if active else batched} "
                                       "is still running"))
                    continue
                for other in active:
                    other.cancel(f"replaced by run {run.run_id}")
            if not sequential:
                batch.append((run, job))
                batched = run.run_id
                continue
            if await self._db(self.store.start_runs, [(run.run_id, job)], now=max(now, run.due_at)):
                self._began(run, job)

    def _skip_all(self, skips: list[tuple[RunRecord, str]], now: float) -> None:
        for run, reason in skips:
            try:
                self.store.set_run_state(run.run_id, "skipped", now=now, reason=reason)
            except JobError:  # cancelled or removed meanwhile: as it is
                pass

    def _began(self, run: RunRecord, job: JobRecord) -> None:
        self.metrics.run_started(job.spec.tenant, self.clock() - run.due_at)  # 0 when prepared ahead
        self._start_driver(run.run_id, job.job_id, job.spec, run.params, fresh=True, due_at=run.due_at)


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds")
