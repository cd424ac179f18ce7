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

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from hub_store import sql
from runtime.exception_groups import describe
from runtime.jobs.lease import Lease

if TYPE_CHECKING:
    from runtime.scheduler.service import Scheduler

log = logging.getLogger("flowctl.scheduler")
LEASE_NAME = "scheduler"
DEFAULT_TTL_S = 10.0
DEFAULT_REFRESH_S = 0.5
LEADER_FILE = "leader.db"
# The `leader` store: one row per lease (the scheduler's, the jobs engine's); versioned like every store.
MIGRATIONS = sql.Migrations("leader", (
    "CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, epoch INTEGER NOT NULL, "
    "expires_at REAL NOT NULL)",))


class LostLeadership(Exception):
    """This plane's scheduler lease ran out or was taken: it must stop reconciling."""


@dataclass(frozen=True)
class LeaderSettings:
    """This plane's name among the planes sharing its state, and the lease's timing."""

    name: str
    ttl_s: float = DEFAULT_TTL_S
    refresh_s: float = DEFAULT_REFRESH_S


class SqlLease:
    """A lease row in the planes' shared state (`leader` store): SQLite or PostgreSQL, one statement each.

    Acquiring is a conditional UPDATE (free, expired, or already this holder's) that bumps the
    epoch, so two planes can never both win one epoch; PostgreSQL re-checks the condition under
    the row lock. Expiry is judged by the database's clock on PostgreSQL (one clock for every
    plane), by this host's on SQLite (planes on one host).
    """

    def __init__(self, db: sql.Database, holder: str, *, name: str = LEASE_NAME, ttl_s: float = DEFAULT_TTL_S,
                 poll_s: float = 1.0):
        self.db, self.holder, self.name, self.ttl_s, self._poll_s = db, holder, name, ttl_s, poll_s

    async def acquire(self) -> int:
        """Poll until the lease is free or expired, then take it; returns the new epoch."""
        while True:
            try:
                epoch = await trio.to_thread.run_sync(self._try_acquire)
            except Exception as exc:  # the database is away (a restart): keep asking, it comes back
                log.warning("lease %s: the state database did not answer: %s", self.name, describe(exc))
                epoch = None
            if epoch is not None:
                return epoch
            await trio.sleep(self._poll_s)

    async def renew(self, epoch: int) -> bool:
        """Extend the lease if this holder still has it under `epoch` and it has not expired."""
        return await trio.to_thread.run_sync(self._renew, epoch)

    async def release(self, epoch: int) -> None:
        """Expire the lease now if this holder still has it under `epoch`."""
        await trio.to_thread.run_sync(lambda: self.db.execute(
            "UPDATE leases SET expires_at=0 WHERE name=? AND holder=? AND epoch=?", (self.name, self.holder, epoch)))

    def holder_now(self) -> tuple[str, int, float] | None:
        """(holder, epoch, seconds left) of the lease, or None when it was never taken (blocking)."""
        with self.db.transaction(immediate=False) as tx:
            now = _now(tx)
            row = tx.execute("SELECT holder, epoch, expires_at FROM leases WHERE name=?", (self.name,)).fetchone()
        return None if row is None else (row[0], int(row[1]), float(row[2]) - now)

    def _try_acquire(self) -> int | None:
        with self.db.transaction() as tx:
            now = _now(tx)
            taken = tx.execute("UPDATE leases SET holder=?, epoch=epoch+1, expires_at=? "
                               "WHERE name=? AND (holder=? OR expires_at <= ?)",
                               (self.holder, now + self.ttl_s, self.name, self.holder, now)).rowcount
            if not taken:
                fresh = tx.execute("INSERT INTO leases (name, holder, epoch, expires_at) VALUES (?, ?, 1, ?) "
                                   "ON CONFLICT (name) DO NOTHING", (self.name, self.holder, now + self.ttl_s))
                if not fresh.rowcount:
                    return None
            row = tx.execute("SELECT epoch FROM leases WHERE name=? AND holder=?", (self.name, self.holder)).fetchone()
            return int(row[0])

    def _renew(self, epoch: int) -> bool:
        with self.db.transaction() as tx:
            now = _now(tx)
            return tx.execute("UPDATE leases SET expires_at=? WHERE name=? AND holder=? AND epoch=? AND expires_at > ?",
                              (now + self.ttl_s, self.name, self.holder, epoch, now)).rowcount == 1


def _now(tx: sql.Tx) -> float:
    """Seconds since the epoch by the database's clock on PostgreSQL, by this host's on SQLite."""
    if tx.dialect == "postgresql":
        return float(tx.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())").fetchone()[0])
    return time.time()


def open_leases(state: sql.State) -> sql.Database:
    """The `leader` store of the plane's state (DIR/leader.db on SQLite), migrated."""
    return sql.open_store(state, MIGRATIONS, LEADER_FILE)


class Leadership:
    """Whether this plane leads the scheduler now, under which epoch, and until when."""

    def __init__(self, lease: Lease, settings: LeaderSettings):
        self.lease, self.settings = lease, settings
        self.epoch = 0
        self.leading = False
        self._valid_until = 0.0

    @classmethod
    def on(cls, db: sql.Database, settings: LeaderSettings) -> Leadership:
        """A leadership whose lease row lives in `db` (the `leader` store, see `open_leases`)."""
        return cls(SqlLease(db, settings.name, ttl_s=settings.ttl_s, poll_s=min(1.0, settings.ttl_s / 4)), settings)

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
                            await _refresh(scheduler, leading=False)
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
            except* Exception as group:  # e.g. the state database went away mid-write: lead again later
                log.error("scheduler: leading failed, stepping down: %s", describe(group))
            finally:
                self.leading = False
                scheduler.stepped_down()
            with trio.CancelScope(shield=True), contextlib.suppress(Exception):
                await self.lease.release(self.epoch)

    async def _lead(self, scheduler: Scheduler) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep)
            nursery.start_soon(self._refresh_deployments, scheduler)
            await scheduler.refresh(leading=False)  # the previous leader's last replicas, as a base
            await scheduler.lead()

    async def _keep(self) -> None:
        pause = self.settings.ttl_s / 3
        while True:
            await trio.sleep(pause)
            try:
                await self.confirm()
                pause = self.settings.ttl_s / 3
            except LostLeadership:
                raise
            except Exception as exc:  # the database did not answer: lead on while the lease lasts, retry soon
                if not self.valid():
                    raise LostLeadership(f"the scheduler lease of epoch {self.epoch} ran out while the state "
                                         f"database was away: {describe(exc)}") from None
                log.warning("scheduler: could not renew the lease (retrying): %s", describe(exc))
                pause = min(1.0, self.settings.ttl_s / 10)

    async def _refresh_deployments(self, scheduler: Scheduler) -> None:
        while True:
            await trio.sleep(self.settings.refresh_s)
            if not self.valid():
                raise LostLeadership(f"the scheduler lease of epoch {self.epoch} ran out before it was renewed")
            await _refresh(scheduler, leading=True)


async def _refresh(scheduler: Scheduler, *, leading: bool) -> None:
    """Re-read the shared state; while the database is away, what was read last stands."""
    try:
        await scheduler.refresh(leading=leading)
    except Exception as exc:
        log.warning("scheduler: could not read the shared state: %s", describe(exc))
