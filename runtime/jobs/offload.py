"""Blocking store calls off the event loop, many per worker-thread trip.

At 200 fires a second each run makes a dozen small SQLite calls; one thread trip apiece
(`trio.to_thread.run_sync`, one at a time) costs more than the calls themselves and queues
them behind each other. `BatchedOffload` runs them in order, one at a time as before, but
every call queued while a trip is under way goes in the next trip together.

Cancellation, as with `trio.to_thread.run_sync`: a call once queued runs, and its caller waits
for it (shielded) before the cancellation takes effect, so it never half-happens unseen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio


class _Call:
    __slots__ = ("fn", "result", "error", "done")

    def __init__(self, fn: Callable[[], Any]):
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False


def _run_all(calls: list[_Call]) -> None:
    for call in calls:
        try:
            call.result = call.fn()
        except BaseException as e:  # delivered to its own caller
            call.error = e
        call.done = True


class BatchedOffload:
    """`await offload(fn)`: fn() in a worker thread, batched with the calls queued meanwhile."""

    def __init__(self) -> None:
        self._queue: list[_Call] = []
        self._busy = False
        self._turn = trio.Event()

    async def __call__(self, fn: Callable[[], Any]) -> Any:
        call = _Call(fn)
        self._queue.append(call)
        with trio.CancelScope(shield=True):
            while not call.done:
                if self._busy:  # a trip is under way: ours goes in the next one
                    await self._turn.wait()
                    continue
                self._busy = True
                batch, self._queue = self._queue, []
                try:
                    await trio.to_thread.run_sync(_run_all, batch)
                except BaseException as e:  # the trip itself failed: no call in it may wait forever
                    for other in batch:
                        if not other.done:
                            other.error, other.done = e, True
                finally:
                    self._busy = False
                    turn, self._turn = self._turn, trio.Event()
                    turn.set()
        await trio.lowlevel.checkpoint_if_cancelled()
        if call.error is not None:
            raise call.error
        return call.result
