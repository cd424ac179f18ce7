"""Blocking model work in a worker thread, its results through a channel, cancellable between items.

The same small module ships in examples/whisper-asr and examples/piper-tts (a bundle holds
only its own directory). `open_stream` runs `work(deliver, cancel)` in a thread under a
CapacityLimiter: each `deliver(item)` reaches the event loop at once; leaving the block
(at the end, on an error, or because the client went away) sets `cancel`, which `work`
checks between items, and the block exits only once the thread has returned, so the model
is never used by two requests at once.
"""

from __future__ import annotations

import math
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

Work = Callable[[Callable[[Any], None], threading.Event], None]


@asynccontextmanager
async def open_stream(limiter: trio.CapacityLimiter, work: Work) -> AsyncIterator[trio.MemoryReceiveChannel[Any]]:
    """Run `work` in a thread holding `limiter`; yields the channel of what it delivers."""
    async with limiter:
        # Unbounded: the work bounds it (segments of one file, sentences of one text), and
        # a slow reader must never hold the model that the next request is waiting for.
        send, receive = trio.open_memory_channel[Any](math.inf)
        cancel = threading.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_run, work, send, cancel)
            try:
                async with receive:
                    yield receive
            finally:
                cancel.set()


async def _run(work: Work, send: trio.MemorySendChannel[Any], cancel: threading.Event) -> None:
    post = trio.lowlevel.current_trio_token().run_sync_soon

    def put(item: Any) -> None:
        try:
            send.send_nowait(item)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            cancel.set()  # the reader left

    def deliver(item: Any) -> None:
        try:
            post(put, item)
        except trio.RunFinishedError:
            cancel.set()

    # The thread's own completion is posted after its last item, so the channel closes
    # only once every item is in it.
    async with send:
        await trio.to_thread.run_sync(work, deliver, cancel)
