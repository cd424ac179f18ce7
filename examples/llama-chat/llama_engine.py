"""The event loop's side of generation: requests go to the decode loop, text comes back on channels.

`Engine.open_stream` hands a request to the model's decode loop (llama_batcher.py), which
runs up to `max_concurrency` of them together in its own thread and posts each piece of
text to the request's memory channel without waiting for the event loop. Leaving the block
(normally, by error or by cancellation, e.g. a client that went away) cancels the request;
the block exits once the loop has freed its sequence, at its next step.

The model is behind a small protocol (llama_backend.py is the real one), so this module
imports neither llama_cpp nor quart and is tested with a fake.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Protocol

import trio
from llama_batcher import BatchBackend, Batcher, Job
from llama_types import ContextTooLong, Finished, Sampling

__all__ = ["Backend", "ContextTooLong", "Engine", "Finished", "Sampling"]

# The channel from the loop is unbounded on purpose: max_tokens (at most the context
# window) bounds it, and a slow reader then never holds up the other sequences of a step.
TOKEN_BUFFER = math.inf
# How long leaving a stream waits for the loop to free its sequence: a step, at most a
# prompt chunk's evaluation, takes well under this.
RELEASE_TIMEOUT_S = 30.0


class Backend(BatchBackend, Protocol):
    """What the engine needs from a model: the decode loop's part, tokens and embeddings."""

    adds_bos: bool

    def tokenize(self, text: str, *, bos: bool = False, special: bool = False) -> list[int]: ...

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]: ...


class Engine:
    """Runs completions on one backend, `max_concurrency` at a time, batched in one thread."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.max_concurrency = backend.parallel
        self.batcher = Batcher(backend)
        self._embed_lock = trio.Lock()
        self._embeds_waiting = 0

    def close(self) -> None:
        """Stop the decode loop (requests still running are dropped)."""
        self.batcher.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def active_requests(self) -> int:
        """Requests decoding now (their sequences are in the batch)."""
        return len(self.batcher.running)

    @property
    def queued_requests(self) -> int:
        """Requests waiting for a sequence (or for room in the KV cache)."""
        return len(self.batcher.pending) + self._embeds_waiting

    @property
    def tokens_generated(self) -> int:
        """Tokens sampled since the start."""
        return self.batcher.tokens_generated

    def check_room(self, prompt_tokens: int) -> None:
        """Raise ContextTooLong unless at least one token fits after the prompt."""
        if prompt_tokens >= self.backend.n_ctx:
            raise ContextTooLong(prompt_tokens, self.backend.n_ctx)

    @asynccontextmanager
    async def open_stream(self, tokens: Sequence[int], sampling: Sampling
                          ) -> AsyncIterator[trio.MemoryReceiveChannel[str | Finished]]:
        """Generate a completion; yields a channel of text pieces ending with a `Finished`."""
        self.check_room(len(tokens))
        if not tokens:
            raise ContextTooLong(0, self.backend.n_ctx)
        send, receive = trio.open_memory_channel[str | Finished](TOKEN_BUFFER)
        released = trio.Event()
        trio_token = trio.lowlevel.current_trio_token()

        def put(item: str | Finished) -> None:
            try:
                send.send_nowait(item)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                job.cancelled = True  # the reader left

        def finish() -> None:
            send.close()
            released.set()

        def post(item: str | Finished) -> None:
            try:
                trio_token.run_sync_soon(put, item)
            except trio.RunFinishedError:
                job.cancelled = True  # the event loop is gone; nobody is listening

        def done() -> None:
            try:
                trio_token.run_sync_soon(finish)
            except trio.RunFinishedError:
                pass

        job = Job(list(tokens), sampling, post, done)
        self.batcher.submit(job)
        try:
            async with receive:
                yield receive
        finally:
            if not released.is_set():
                self.batcher.cancel(job)
                with trio.CancelScope(shield=True), trio.move_on_after(RELEASE_TIMEOUT_S):
                    await released.wait()

    async def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Embedding vectors for `texts` and the number of tokens they took."""
        self._embeds_waiting += 1
        try:
            await self._embed_lock.acquire()
        finally:
            self._embeds_waiting -= 1
        try:
            return await trio.to_thread.run_sync(self.backend.embed, texts)
        finally:
            self._embed_lock.release()
