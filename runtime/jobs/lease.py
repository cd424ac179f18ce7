"""Who leads the job engine: a `Lease` with an epoch that fences every dispatch.

Only the leader fires and dispatches. Each acquisition bumps the epoch; every attempt is
dispatched with it, and whatever runs the attempt keeps an `EpochFence` that refuses an
epoch older than one it has seen, so a deposed leader that has not yet noticed cannot start
work. With one plane the plane is the leader (`SoloLease`); `SqliteLease` keeps the lease in
the jobs database (several engines on one file); the scale-out issue adds a PostgreSQL lease
behind the same protocol, without touching the engine.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol

import trio

from runtime.jobs.errors import StaleEpoch
from runtime.jobs.store import RunStore

DEFAULT_TTL_S = 15.0
DEFAULT_POLL_S = 1.0


class Lease(Protocol):
    """The job leader's lease."""

    ttl_s: float

    async def acquire(self) -> int:
        """Wait until this holder leads; returns its new epoch (greater than any before)."""
        ...

    async def renew(self, epoch: int) -> bool:
        """Extend the lease held under `epoch`; False when it was lost meanwhile."""
        ...

    async def release(self, epoch: int) -> None:
        """Give the lease up, so another holder can lead at once."""
        ...


class SoloLease:
    """The lease of a lone plane: always granted, a new epoch per acquisition."""

    def __init__(self, *, first_epoch: int = 1, ttl_s: float = DEFAULT_TTL_S):
        self.ttl_s = ttl_s
        self._next = first_epoch

    async def acquire(self) -> int:
        """Lead at once."""
        await trio.lowlevel.checkpoint()
        self._next += 1
        return self._next - 1

    async def renew(self, epoch: int) -> bool:
        """Still leading, unless a later acquisition superseded `epoch`."""
        await trio.lowlevel.checkpoint()
        return epoch == self._next - 1

    async def release(self, epoch: int) -> None:
        """Nothing to give up."""
        await trio.lowlevel.checkpoint()


class SqliteLease:
    """A lease row in the jobs database: held until `ttl_s` without renewal, epoch bumped per grant."""

    def __init__(self, store: RunStore, holder: str, *, name: str = "jobs", ttl_s: float = DEFAULT_TTL_S,
                 poll_s: float = DEFAULT_POLL_S, clock: Callable[[], float] = time.time,
                 offload: Callable[[Callable[[], Any]], Awaitable[Any]] | None = None):
        self.ttl_s, self.holder, self.name = ttl_s, holder, name
        self._store, self._poll_s, self._clock = store, poll_s, clock
        self._offload = offload or trio.to_thread.run_sync

    async def acquire(self) -> int:
        """Poll until the lease is free or expired, then take it."""
        while True:
            epoch: int | None = await self._offload(partial(self._try_acquire, self._clock()))
            if epoch is not None:
                return epoch
            await trio.sleep(self._poll_s)

    async def renew(self, epoch: int) -> bool:
        """Extend the lease if this holder still has it under `epoch` and it has not expired."""
        return bool(await self._offload(partial(self._renew, epoch, self._clock())))

    async def release(self, epoch: int) -> None:
        """Expire the lease now if this holder still has it."""
        await self._offload(partial(self._release, epoch))

    def _release(self, epoch: int) -> None:
        with self._store.transaction() as db:
            db.execute("UPDATE leases SET expires_at=0 WHERE name=? AND holder=? AND epoch=?",
                       (self.name, self.holder, epoch))

    def _try_acquire(self, now: float) -> int | None:
        with self._store.transaction() as db:
            row = db.execute("SELECT holder, epoch, expires_at FROM leases WHERE name=?", (self.name,)).fetchone()
            if row is None:
                db.execute("INSERT INTO leases VALUES (?, ?, 1, ?)", (self.name, self.holder, now + self.ttl_s))
                return 1
            holder, epoch, expires_at = row
            if holder != self.holder and expires_at > now:
                return None
            db.execute("UPDATE leases SET holder=?, epoch=?, expires_at=? WHERE name=?",
                       (self.holder, epoch + 1, now + self.ttl_s, self.name))
            return int(epoch) + 1

    def _renew(self, epoch: int, now: float) -> bool:
        with self._store.transaction() as db:
            cursor = db.execute("UPDATE leases SET expires_at=? WHERE name=? AND holder=? AND epoch=? "
                                "AND expires_at > ?", (now + self.ttl_s, self.name, self.holder, epoch, now))
            return cursor.rowcount == 1


class EpochFence:
    """The receiving side's check: refuse work from an epoch older than the newest seen."""

    def __init__(self) -> None:
        self.current = 0

    def check(self, epoch: int) -> None:
        """Accept `epoch` (remembering it if newer) or raise StaleEpoch."""
        if epoch < self.current:
            raise StaleEpoch(epoch, self.current)
        self.current = epoch
