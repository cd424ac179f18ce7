"""Fewer, larger writes for fast streams, with no delay for slow ones.

A relay that writes every chunk the moment it arrives makes one socket write (and one
wake-up of the reader) per token: at tens of thousands of tokens per second that is the
whole cost of the relay. Chunks that arrive closer together than HOLD are instead gathered
for up to HOLD and written at once; a chunk after a pause (the first one, an LLM's tokens
at a few dozen per second) goes out immediately, so time to first token is untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

HOLD = 0.001
BATCH = 64 * 1024


class Pacer:
    """Tells whether a chunk follows the previous write closely enough to gather more."""

    def __init__(self, hold: float = HOLD) -> None:
        self.hold = hold
        self._last = -float("inf")

    def fast(self) -> bool:
        """True if the previous write was less than `hold` ago."""
        return trio.current_time() - self._last < self.hold

    def wrote(self) -> None:
        """Record a write now."""
        self._last = trio.current_time()


async def gather(receive_some: Callable[[], Awaitable[bytes]], chunk: bytes, hold: float = HOLD,
                 limit: int = BATCH) -> bytes:
    """`chunk` and what else arrives within `hold` (up to `limit` bytes, or the end: b"")."""
    parts, size = [chunk], len(chunk)
    with trio.move_on_after(hold):
        while size < limit:
            more = await receive_some()
            if not more:
                break
            parts.append(more)
            size += len(more)
    return parts[0] if len(parts) == 1 else b"".join(parts)
