"""Generation off the event loop: one model, one request at a time, tokens through a channel.

A request waits for the engine's CapacityLimiter (one slot: a llama.cpp context runs one
sequence), then a worker thread runs the sampling loop and hands each piece of text to the
event loop through a memory channel. Between tokens the thread checks a cancel flag, so a
request whose client went away stops within one token and frees the slot.

The model itself is behind the small `Backend` protocol (llama_backend.py is the real one),
so this module imports neither llama_cpp nor quart and is tested with a fake.
"""

from __future__ import annotations

import codecs
import math
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import trio

# The channel from the generating thread is unbounded on purpose: max_tokens (at most the
# context window) bounds it, and a slow reader then never holds the model, whose one slot
# the next request is waiting for. The thread posts pieces without waiting for the event
# loop, so handing a token over costs the sampling loop no round trip.
TOKEN_BUFFER = math.inf


@dataclass(frozen=True)
class Sampling:
    """How to sample one completion."""

    max_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repeat_penalty: float = 1.0


@dataclass(frozen=True)
class Finished:
    """The last item of a stream: why it ended and the token counts."""

    finish_reason: str  # "stop", "length" or "cancelled"
    prompt_tokens: int
    completion_tokens: int


class Backend(Protocol):
    """What the engine needs from a model."""

    n_ctx: int
    adds_bos: bool

    def tokenize(self, text: str, *, bos: bool = False, special: bool = False) -> list[int]: ...

    def generate(self, tokens: Sequence[int], sampling: Sampling) -> Iterator[int]: ...

    def piece(self, token: int) -> bytes: ...

    def is_end(self, token: int) -> bool: ...

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]: ...


class ContextTooLong(Exception):
    """The prompt leaves no room for a completion in the model's context window."""

    def __init__(self, prompt_tokens: int, n_ctx: int):
        super().__init__(f"the prompt has {prompt_tokens} tokens; this model's context window "
                         f"holds {n_ctx}, so there is no room for a completion")
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx


class StopScanner:
    """Finds stop sequences in streamed text, holding back what may be the start of one."""

    def __init__(self, stops: Sequence[str]):
        self.stops = tuple(s for s in stops if s)
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Text that is safe to send now, and whether a stop sequence was reached."""
        if not self.stops:
            return text, False
        self.pending += text
        hits = [self.pending.find(s) for s in self.stops if s in self.pending]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        hold = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(self.pending)), hold, -1):
                if self.pending.endswith(stop[:size]):
                    hold = size
                    break
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(out):]
        return out, False

    def flush(self) -> str:
        """What was held back, once the stream ends without a stop."""
        out, self.pending = self.pending, ""
        return out


class Engine:
    """Runs completions on one backend, one at a time, in a worker thread."""

    max_concurrency = 1

    def __init__(self, backend: Backend):
        self.backend = backend
        self.limiter = trio.CapacityLimiter(self.max_concurrency)
        self.tokens_generated = 0

    @property
    def active_requests(self) -> int:
        """Requests holding the model now (0 or 1)."""
        return self.limiter.statistics().borrowed_tokens

    @property
    def queued_requests(self) -> int:
        """Requests waiting for the model."""
        return self.limiter.statistics().tasks_waiting

    def check_room(self, prompt_tokens: int) -> None:
        """Raise ContextTooLong unless at least one token fits after the prompt."""
        if prompt_tokens >= self.backend.n_ctx:
            raise ContextTooLong(prompt_tokens, self.backend.n_ctx)

    @asynccontextmanager
    async def open_stream(self, tokens: Sequence[int], sampling: Sampling
                          ) -> AsyncIterator[trio.MemoryReceiveChannel[str | Finished]]:
        """Generate a completion; yields a channel of text pieces ending with a `Finished`.

        Cancellation: leaving the block (normally, by error or by cancellation) tells the
        thread to stop; it does so before sampling another token, and the block exits once
        it has, so the model is never used by two requests at once.
        """
        self.check_room(len(tokens))
        async with self.limiter:
            send, receive = trio.open_memory_channel[str | Finished](TOKEN_BUFFER)
            cancel = threading.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._run_in_thread, tokens, sampling, send, cancel)
                try:
                    async with receive:
                        yield receive
                finally:
                    cancel.set()

    async def _run_in_thread(self, tokens: Sequence[int], sampling: Sampling,
                             send: trio.MemorySendChannel[str | Finished],
                             cancel: threading.Event) -> None:
        post = trio.lowlevel.current_trio_token().run_sync_soon

        def put(item: str | Finished) -> None:
            try:
                send.send_nowait(item)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                cancel.set()  # the reader left

        # Callbacks run in the order posted, and the thread's own completion is posted after
        # its last piece, so the channel closes only once every piece is in it.
        async with send:
            await trio.to_thread.run_sync(self._generate, tokens, sampling,
                                          lambda item: post(put, item), cancel)

    def _generate(self, tokens: Sequence[int], sampling: Sampling,
                  deliver: Callable[[str | Finished], None], cancel: threading.Event) -> None:
        """The sampling loop; runs in a worker thread."""
        room = self.backend.n_ctx - len(tokens)
        limit = min(sampling.max_tokens, room)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        scanner = StopScanner(sampling.stop)
        finish, count = "length", 0
        tokens_iter = self.backend.generate(tokens, sampling)
        try:
            while count < limit:
                if cancel.is_set():
                    finish = "cancelled"
                    break
                token = next(tokens_iter, None)
                if token is None or self.backend.is_end(token):
                    finish = "stop"
                    break
                count += 1
                self.tokens_generated += 1
                text, stopped = scanner.feed(decoder.decode(self.backend.piece(token)))
                if text:
                    deliver(text)
                if stopped:
                    finish = "stop"
                    break
            if finish != "stop":
                tail = scanner.feed(decoder.decode(b"", final=True))[0] + scanner.flush()
                if tail and finish != "cancelled":
                    deliver(tail)
            if finish != "cancelled":
                deliver(Finished(finish, len(tokens), count))
        except trio.RunFinishedError:
            return  # the event loop is gone; nobody is listening
        finally:
            close = getattr(tokens_iter, "close", None)
            if close is not None:
                close()

    async def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Embedding vectors for `texts` and the number of tokens they took."""
        async with self.limiter:
            return await trio.to_thread.run_sync(self.backend.embed, texts)
