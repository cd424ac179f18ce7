"""One scheduler leader among several planes on one state: a lease with an epoch, and fencing.

Planes sharing a state database (docs/scale-out.md) all serve the API, take node connections
and route requests; only the holder of the `scheduler` lease reconciles: places replicas,
persists them and sends nodes their desired state. Each acquisition bumps the lease's epoch;
every assign carries it and nodes refuse an epoch older than the newest they saw from any
plane (runtime/node/agent/fence.py), so a leader paused past its lease (SIGSTOP, a partition)
cannot undo its successor's work when it wakes:

- it stops acting as soon as its own clock says the lease ran out (`valid`), before any renewal;
- the replica table is written only right after a conditional renewal under its epoch succeeded;
- whatever slips through anyway is refused by the nodes.

Followers re-read deployments and replicas from the store every `refresh_s` (the leader re-reads
deployments too: a deploy may arrive through any plane) and keep the replica states their own
node links report, so they route to ready replicas without asking the leader.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from runtime.jobs.lease import Lease, SqliteLease

if TYPE_CHECKING:
    from runtime.scheduler.service import Scheduler

log = logging.getLogger("flowctl.scheduler")
LEASE_NAME = "scheduler"
DEFAULT_TTL_S = 10.0
DEFAULT_REFRESH_S = 0.5
_TABLE = "CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, " \
         "epoch INTEGER NOT NULL, expires_at REAL NOT NULL)"


class LostLeadership(Exception):
    """This plane's scheduler lease ran out or was taken: it must stop reconciling."""


@dataclass(frozen=True)
class LeaderSettings:
    """This plane's name among the planes sharing its state, and the lease's timing."""

    name: str
    ttl_s: float = DEFAULT_TTL_S
    refresh_s: float = DEFAULT_REFRESH_S


class LeaseDb:
    """The `leases` table in a SQLite file the planes share (cluster.db), for `SqliteLease`."""

    def __init__(self, path: Path):
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_TABLE)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: planes on one host take turns)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()


class Leadership:
    """Whether this plane leads the scheduler now, under which epoch, and until when."""

    def __init__(self, lease: Lease, settings: LeaderSettings):
        self.lease, self.settings = lease, settings
        self.epoch = 0
        self.leading = False
        self._valid_until = 0.0

    @classmethod
    def on_sqlite(cls, path: Path, settings: LeaderSettings) -> Leadership:
        """A leadership whose lease row lives in the SQLite file at `path`."""
        return cls(SqliteLease(LeaseDb(path), settings.name, name=LEASE_NAME, ttl_s=settings.ttl_s,  # type: ignore[arg-type]
                               poll_s=min(1.0, settings.ttl_s / 4)), settings)

    def valid(self) -> bool:
        """Leading, and the lease has not run out by this plane's own clock."""
        return self.leading and trio.current_time() < self._valid_until

    async def confirm(self) -> None:
        """Renew under the current epoch before a durable write; LostLeadership if that fails."""
        started = trio.current_time()
        if not self.valid() or not await self.lease.renew(self.epoch):
            raise LostLeadership(f"the scheduler lease of epoch {self.epoch} was lost")
        self._valid_until = started + self.settings.ttl_s

    async def run(self, scheduler: Scheduler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow until the lease is free, lead until it is lost, and again, until cancelled."""
        started = False
        while True:
            async with trio.open_nursery() as nursery:
                following = trio.CancelScope()

                async def follow() -> None:
                    with following:  # noqa: B023 - cancelled before the next round
                        while True:
                            await scheduler.refresh(leading=False)
                            await trio.sleep(self.settings.refresh_s)

                nursery.start_soon(follow)
                if not started:
                    started = True
                    task_status.started()
                asked = trio.current_time()
                self.epoch = await self.lease.acquire()
                self._valid_until = asked + self.settings.ttl_s
                following.cancel()
            log.info("scheduler: leading under epoch %d (%s)", self.epoch, self.settings.name)
            self.leading = True
            try:
                await self._lead(scheduler)
            except* LostLeadership as group:
                log.warning("scheduler: stepped down: %s", group.exceptions[0])
            finally:
                self.leading = False
                scheduler.stepped_down()
            with trio.CancelScope(shield=True):
                await self.lease.release(self.epoch)

    async def _lead(self, scheduler: Scheduler) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep)
            nursery.start_soon(self._refresh_deployments, scheduler)
            await scheduler.refresh(leading=False)  # the previous leader's last replicas, as a base
            await scheduler.lead()

    async def _keep(self) -> None:
        while True:
            await trio.sleep(self.settings.ttl_s / 3)
            await self.confirm()

    async def _refresh_deployments(self, scheduler: Scheduler) -> None:
        while True:
            await trio.sleep(self.settings.refresh_s)
            if not self.valid():
                raise LostLeadership(f"the scheduler lease of epoch {self.epoch} ran out before it was renewed")
            await scheduler.refresh(leading=True)
