"""Declared ports (service.json `port`) on one node: one replica at a time, never a stranger's.

A service that declares its port listens there instead of on a port the node picks. The
plane places at most one replica per node on it; here, a replica that replaces another on
the same node (a restart with a new attempt, an in-place upgrade) waits until the one
before has stopped and let go, and a port held by any other process is refused with
PortInUse, which the node reports so the plane places the replica elsewhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from runtime.node.workers.errors import PortInUse
from runtime.node.workers.process import port_in_use

DEFAULT_RELEASE_WAIT_S = 60.0


class PortClaims:
    """Which of this node's replicas holds each declared port."""

    def __init__(self, *, release_wait_s: float = DEFAULT_RELEASE_WAIT_S):
        self.release_wait_s = release_wait_s
        self._holders: dict[int, tuple[str, trio.Event]] = {}

    def holder(self, port: int) -> str | None:
        """The replica holding `port`, or None."""
        held = self._holders.get(port)
        return held[0] if held is not None else None

    @asynccontextmanager
    async def hold(self, port: int | None, owner: str) -> AsyncIterator[None]:
        """Hold `port` for `owner` while the block runs (None: nothing to hold).

        Waits (up to `release_wait_s`) for another replica of this node that holds it to
        stop. Error handling: PortInUse when that takes too long, or when another process
        listens on the port.
        """
        if port is None:
            yield
            return
        with trio.move_on_after(self.release_wait_s):
            while (held := self._holders.get(port)) is not None:
                await held[1].wait()
        if (held := self._holders.get(port)) is not None:
            raise PortInUse(port, f"replica {held[0]}, still stopping after {self.release_wait_s:g} s")
        if await trio.to_thread.run_sync(port_in_use, port):
            raise PortInUse(port)
        released = trio.Event()
        self._holders[port] = (owner, released)
        try:
            yield
        finally:
            del self._holders[port]
            released.set()
