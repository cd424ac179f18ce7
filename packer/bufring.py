"""A ring of reused buffers whose slots are recycled only when the work queued on them is done.

Reading a gigabyte into a fresh 1 MiB `bytes` per read costs a page fault per 4 KiB
(the allocator hands freed megabytes back to the kernel), which made the reading
thread the bottleneck of verify and unpack. Reading into a few preallocated buffers
instead, and letting worker threads (hashing, writing) hold a slot until their future
completes, keeps several chunks in flight with bounded memory: `slots * size` bytes.
"""

from __future__ import annotations

from concurrent.futures import Future


class BufferRing:
    """`slots` buffers of `size` bytes, handed out round-robin by `acquire()`."""

    def __init__(self, slots: int, size: int) -> None:
        if slots < 2:
            raise ValueError("a buffer ring needs at least two slots")
        self._views = [memoryview(bytearray(size)) for _ in range(slots)]
        self._holds: list[list[Future]] = [[] for _ in range(slots)]
        self._next = 0

    @property
    def size(self) -> int:
        """The size of each buffer."""
        return len(self._views[0])

    def acquire(self) -> tuple[int, memoryview]:
        """(slot, buffer) of the next buffer, once every future held on it has completed.

        A future that failed re-raises its error here.
        """
        slot = self._next
        self._next = (slot + 1) % len(self._views)
        _wait_all(self._holds[slot])
        return slot, self._views[slot]

    def view(self, slot: int) -> memoryview:
        """The buffer of `slot` (for a caller that tracks slots itself, with `wait`)."""
        return self._views[slot]

    def wait(self, slot: int) -> None:
        """Wait for every future held on `slot` (re-raising the first error)."""
        _wait_all(self._holds[slot])

    def hold(self, slot: int, future: Future) -> None:
        """Keep `slot` from being handed out again until `future` completes."""
        holds = self._holds[slot]
        if len(holds) > 64:  # many small files in one buffer: forget the finished ones
            holds[:] = [f for f in holds if not f.done() or f.exception() is not None]
        holds.append(future)

    def drain(self) -> None:
        """Wait for every held future (re-raising the first error found)."""
        for holds in self._holds:
            _wait_all(holds)

    def abandon(self) -> None:
        """Forget every hold without waiting (the pools behind them are being shut down)."""
        for holds in self._holds:
            holds.clear()


def _wait_all(holds: list[Future]) -> None:
    # A decoding thread and the reader's final drain may wait on the same slot: pop safely.
    while True:
        try:
            future = holds.pop()
        except IndexError:
            return
        future.result()
