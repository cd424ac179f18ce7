"""The engine's picture of the job table: every job cached, and the timed ones in a heap by next fire.

A pass of the engine plans only the jobs whose next fire entered the window (the heap's head),
so 10,000 jobs cost nothing while none of them fires; re-reading the whole table each pass
would cost a query and a record per job, many times a second. The cache follows the store:
the engine puts what it writes itself (apply, suspend, each planned cursor) and `sync` compares
every job's (version, suspended, cursor) with the table every tick, re-reading the few that
another writer changed (another plane's API on a shared store). A heap entry carries the key it
was computed from; one whose job changed since is dropped when it surfaces.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import replace

from runtime.jobs.firetimes import fires_between, last_fires, next_fire
from runtime.jobs.model import EventTrigger, JobSpec
from runtime.jobs.records import JobRecord, NewRun
from runtime.jobs.schema import resolve_parameters

Key = tuple[int, bool, int]  # (version, suspended, planned_until)
Row = tuple[str, int, int, int]  # job_id, version, suspended, planned_until, as the table has them


def _key(job: JobRecord) -> Key:
    return job.version, job.suspended, job.planned_until


class Planner:
    """Cached jobs, the event-triggered ones apart, and the timed ones' next fires."""

    def __init__(self, window_s: float, misfire_grace_s: float):
        self.window_s, self.misfire_grace_s = window_s, misfire_grace_s
        # Planning runs half a second off the whole seconds cron fires on: a window's inserts
        # (a worker thread holding the store) never coincide with a burst being dispatched.
        self.shift_s = min(0.5, window_s / 2)
        self.jobs: dict[str, JobRecord] = {}
        self.on_event: dict[str, JobRecord] = {}
        self.loaded = False  # the whole table was read at least once
        self._heap: list[tuple[int, str, Key]] = []
        # job id -> ((version, cursor), the first fire after the cursor): one cron step per fire
        self._following: dict[str, tuple[tuple[int, int], int | None]] = {}

    def load(self, jobs: list[JobRecord]) -> None:
        """Replace the cache with the whole table."""
        present = {job.job_id for job in jobs}
        for job_id in [j for j in self.jobs if j not in present]:
            self.drop(job_id)
        for job in jobs:
            self.put(job)
        self.loaded = True

    def put(self, job: JobRecord) -> None:
        """Cache `job` as the store now has it (and queue its next fire, if it changed)."""
        old = self.jobs.get(job.job_id)
        self.jobs[job.job_id] = job
        if isinstance(job.spec.trigger, EventTrigger):
            self.on_event[job.job_id] = job
        else:
            self.on_event.pop(job.job_id, None)
        if old is not None and _key(old) == _key(job):
            return
        if not job.suspended and job.spec.timed:
            following = self.first_fire_after(job, job.planned_until)
            if following is not None:
                heapq.heappush(self._heap, (following, job.job_id, _key(job)))

    def drop(self, job_id: str) -> None:
        """Forget a deleted job (its heap entries lapse)."""
        self.jobs.pop(job_id, None)
        self.on_event.pop(job_id, None)
        self._following.pop(job_id, None)

    def stale(self, rows: list[Row]) -> list[str]:
        """Drop jobs no longer in `rows` (the table's keys); returns the ids to re-read."""
        seen, changed = set(), []
        for job_id, version, suspended, planned_until in rows:
            seen.add(job_id)
            job = self.jobs.get(job_id)
            if job is None or _key(job) != (version, bool(suspended), planned_until):
                changed.append(job_id)
        for job_id in [j for j in self.jobs if j not in seen]:
            self.drop(job_id)
        return changed

    def due(self, horizon: int) -> list[JobRecord]:
        """The jobs with a fire at or before `horizon` not yet planned (taken off the heap)."""
        found = []
        while self._heap and self._heap[0][0] <= horizon:
            _, job_id, key = heapq.heappop(self._heap)
            job = self.jobs.get(job_id)
            if job is not None and _key(job) == key:
                found.append(job)
        return found

    def next_plan_at(self) -> float | None:
        """When the earliest next fire enters the window."""
        while self._heap:
            following, job_id, key = self._heap[0]
            job = self.jobs.get(job_id)
            if job is not None and _key(job) == key:
                return following - self.window_s + self.shift_s
            heapq.heappop(self._heap)
        return None

    def new_runs(self, job: JobRecord, now: float, horizon: int) -> list[NewRun]:
        """The runs of `job`'s fires after its cursor up to `horizon`; after an outage only those
        its misfire policy may run (the latest N before `now - misfire_grace_s`)."""
        spec = job.spec
        missed_until = int(now - self.misfire_grace_s)
        params = json.dumps(resolve_parameters(spec))
        start, new = job.planned_until, []
        following = self.first_fire_after(job, start)
        if following is not None and following <= missed_until:
            new += [NewRun(t, "schedule", t, params=params)
                    for t in last_fires(spec.trigger, start, missed_until, misfire_keep(spec))]
            start = missed_until
        new += [NewRun(t, "schedule", t, params=params) for t in fires_between(spec.trigger, start, horizon)]
        return new

    def planned(self, job: JobRecord, horizon: int) -> None:
        """`job`'s fires up to `horizon` are materialised: move its cursor and queue the next."""
        self.put(replace(job, planned_until=max(job.planned_until, horizon)))

    def first_fire_after(self, job: JobRecord, cursor: int) -> int | None:
        """next_fire, remembered per job version and cursor: one cron step per fire, not per pass."""
        key = (job.version, cursor)
        cached = self._following.get(job.job_id)
        if cached is None or cached[0] != key:
            cached = self._following[job.job_id] = (key, next_fire(job.spec.trigger, cursor))
        return cached[1]


def misfire_keep(spec: JobSpec) -> int:
    """How many missed fires the job's misfire policy runs: 0 (skip), 1 (run_once) or N (catch_up)."""
    policies = spec.policies
    return {"skip": 0, "run_once": 1, "catch_up": policies.catch_up_max}[policies.misfire]
