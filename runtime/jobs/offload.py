"""Store calls: small ones on the event loop, large ones off it, many per worker-thread trip.

`run_inline` runs a call where it is: the engine's per-run calls take tens of microseconds,
while a worker-thread trip costs a hand-off each way, and on a loaded machine every hand-off
waits for the OS to schedule the other thread (measured: 10-50 ms a trip at load 6 on two
cores, so the four calls before a step is sent took longer than the send itself).

At 200 fires a second each run makes a dozen small SQLite calls; one thread trip apiece
(`trio.to_thread.run_sync`, one at a time) costs more than the calls themselves and queues
them behind each other. `BatchedOffload` runs them in order, one at a time as before, but
every call queued while a trip is under way goes in the next trip together.

Given a `group` (`RunStore.group`), each trip's calls also commit together: one SQLite commit
per trip, and each caller learns its result only once it is committed.

`BatchedOffload(group, inline=True)` runs each batch on the event loop instead, after one
checkpoint so that every call made in the same scheduling round joins it: a cron burst's 200
runs make their store calls in a handful of transactions (one commit each), not 200 x 7, and
no thread hop. For the engine's small per-run calls; whole-table calls stay in the thread.

Cancellation, as with `trio.to_thread.run_sync`: a call once queued runs, and its caller waits
for it (shielded) before the cancellation takes effect, so it never half-happens unseen.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import trio


class _Call:
    __slots__ = ("fn", "result", "error", "done")

    def __init__(self, fn: Callable[[], Any]):
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False


def _run_all(calls: list[_Call], group: Callable[[], AbstractContextManager[Any]]) -> None:
    with group():
        for call in calls:
            try:
                call.result = call.fn()
            except BaseException as e:  # delivered to its own caller
                call.error = e
            call.done = True


class BatchedOffload:
    """`await offload(fn)`: fn() in a worker thread, batched with the calls queued meanwhile."""

    def __init__(self, group: Callable[[], AbstractContextManager[Any]] = nullcontext, *,
                 inline: bool = False, max_batch: int = 256) -> None:
        self._group = group
        self._inline = inline
        # Inline, a trip holds the event loop: at most this many calls each, so a burst of
        # 10,000 runs never starves the nodes' heartbeats (the rest go in the next trips).
        self._max_batch = max_batch if inline else 1 << 62
        self._queue: list[_Call] = []
        self._busy = False
        self._turn = trio.Event()

    async def __call__(self, fn: Callable[[], Any]) -> Any:
        if self._inline:
            await trio.lowlevel.checkpoint_if_cancelled()  # not queued once cancelled, as run_inline
        call = _Call(fn)
        self._queue.append(call)
        with trio.CancelScope(shield=True):
            while not call.done:
                if self._busy:  # a trip is under way: ours goes in the next one
                    await self._turn.wait()
                    continue
                self._busy = True
                if self._inline:  # the other tasks of this round queue their calls meanwhile
                    await trio.lowlevel.checkpoint()
                batch, self._queue = self._queue[:self._max_batch], self._queue[self._max_batch:]
                try:
                    if self._inline:
                        _run_all(batch, self._group)
                    else:
                        await trio.to_thread.run_sync(_run_all, batch, self._group)
                except BaseException as e:  # the trip (or its commit) failed: it failed every call in it
                    for other in batch:
                        other.error, other.done = e, True
                finally:
                    self._busy = False
                    turn, self._turn = self._turn, trio.Event()
                    turn.set()
        await trio.lowlevel.checkpoint_if_cancelled()
        if call.error is not None:
            raise call.error
        return call.result


async def run_inline(fn: Callable[[], Any]) -> Any:
    """fn() on the event loop: not started if already cancelled, never abandoned once started."""
    await trio.lowlevel.checkpoint_if_cancelled()
    result = fn()
    await trio.lowlevel.cancel_shielded_checkpoint()
    return result
