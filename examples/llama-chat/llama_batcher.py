"""Continuous batching: one decode loop per model, in its own thread, for every running request.

Each step the loop admits waiting requests (up to `parallel` run at once, each in its own
sequence id, see llama_cache.py), then builds one batch: the last sampled token of every
generating sequence, plus up to `chunk` prompt tokens of sequences still reading their
prompt (so a long prompt is read over several steps while the others keep getting a token
per step), and calls the backend's decode once. Each sequence then samples from its own
logits with its own sampler chain, and its text goes to its request through `Job.post`.
A cancelled request leaves at the next step; the others never notice.
"""

from __future__ import annotations

import codecs
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from llama_cache import Lease, PrefixCache
from llama_stops import StopScanner
from llama_types import Finished, Sampling


class BatchBackend(Protocol):
    """What the loop needs from a model (llama_backend.LlamaBackend; a fake in tests)."""

    n_ctx: int  # per sequence
    parallel: int
    chunk: int
    n_seq: int
    kv_tokens: int

    def new_sampler(self, sampling: Sampling, history: list[int]) -> Any: ...

    def free_sampler(self, sampler: Any) -> None: ...

    def decode(self, tokens: list[int], positions: list[int], seqs: list[int],
               logits: list[bool]) -> None: ...

    def sample(self, sampler: Any, index: int) -> int: ...

    def forget(self, seq: int, start: int) -> bool: ...

    def piece(self, token: int) -> bytes: ...

    def is_end(self, token: int) -> bool: ...


@dataclass(eq=False)
class Job:
    """One completion request as the loop sees it.

    `post` hands an item to the request (thread-safe, never blocks); `done` says the loop
    has let go of the request (its sequence is free). `cancelled` is set by the request.
    """

    prompt: list[int]
    sampling: Sampling
    post: Callable[[str | Finished], None]
    done: Callable[[], None]
    cancelled: bool = False
    lease: Lease | None = None
    history: list[int] = field(default_factory=list)
    evaluated: int = 0  # tokens of `history` in the KV cache
    generated: int = 0
    sampler: Any = None
    scanner: StopScanner | None = None
    decoder: Any = None

    @property
    def limit(self) -> int:
        """Tokens this request may generate."""
        return self.lease.reserved - len(self.prompt) if self.lease else 0


class Batcher:
    """The decode loop of one model; `submit` jobs from any thread, `close` to stop it."""

    def __init__(self, backend: BatchBackend):
        self.backend = backend
        self.cache = PrefixCache(backend.n_seq, backend.kv_tokens, backend.forget,
                                 reuse=getattr(backend, "prompt_cache", True))
        self.pending: deque[Job] = deque()
        self.running: list[Job] = []
        self.tokens_generated = 0
        self.steps = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="llama-decode", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job; the loop admits it between steps."""
        with self._cond:
            if self._closing:
                job.done()
                return
            self.pending.append(job)
            self._cond.notify()

    def cancel(self, job: Job) -> None:
        """Ask the loop to drop `job` at its next step (then it calls job.done())."""
        job.cancelled = True
        with self._cond:
            self._cond.notify()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the loop; jobs still waiting or running are dropped."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)

    # --- the loop thread ---

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._closing and not self.pending and not self.running:
                        self._cond.wait()
                    if self._closing:
                        break
                    self._admit()
                for job in [j for j in self.running if j.cancelled]:
                    self._end(job, None)
                if self.running:
                    self._step()
                elif self.pending:
                    with self._cond:  # waiting for room that only a finish can make
                        self._cond.wait(0.05)
        finally:
            with self._cond:
                leftovers = [*self.pending, *self.running]
                self.pending.clear()
            for job in leftovers:
                if job.lease is not None:
                    self._end(job, None)
                else:
                    job.done()

    def _admit(self) -> None:
        while self.pending and self.pending[0].cancelled:
            self.pending.popleft().done()
        while self.pending and len(self.running) < self.backend.parallel:
            job = self.pending[0]
            if job.cancelled:
                self.pending.popleft().done()
                continue
            need = min(len(job.prompt) + job.sampling.max_tokens, self.backend.n_ctx)
            lease = self.cache.acquire(job.prompt, need)
            if lease is None:
                return
            self.pending.popleft()
            job.lease = lease
            job.history = list(job.prompt)
            job.evaluated = lease.reused
            job.sampler = self.backend.new_sampler(job.sampling, job.prompt)
            job.scanner = StopScanner(job.sampling.stop)
            job.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            self.running.append(job)

    def _step(self) -> None:
        """One step: a token for every generating sequence, a prompt chunk for the others."""
        generating: list[tuple[Job, int]] = []
        reading: list[Job] = []
        for job in self.running:
            if job.evaluated >= len(job.prompt):
                generating.append((job, 1))  # the token it sampled last step
            else:
                reading.append(job)
        chunks: list[tuple[Job, int]] = []
        budget = self.backend.chunk
        for job in reading:  # oldest first: one long prompt does not starve the next forever
            if budget <= 0:
                break
            count = min(budget, len(job.history) - job.evaluated)
            chunks.append((job, count))
            budget -= count
        if getattr(self.backend, "deterministic", False):
            # One decode for the generating tokens, one per prompt chunk: the shapes
            # whose every ubatch llama_ubatch.py can keep at least two rows wide.
            groups = [generating] if generating else []
            groups += [[chunk] for chunk in chunks]
        else:
            groups = [generating + chunks] if generating or chunks else []
        for group in groups:
            self._decode(group)

    def _decode(self, group: list[tuple[Job, int]]) -> None:
        """Evaluate `count` tokens of each job in one decode, then sample the ones that are due."""
        tokens: list[int] = []
        positions: list[int] = []
        seqs: list[int] = []
        logits: list[bool] = []
        samplers: list[tuple[Job, int]] = []
        for job, count in group:
            assert job.lease is not None
            for pos in range(job.evaluated, job.evaluated + count):
                tokens.append(job.history[pos])
                positions.append(pos)
                seqs.append(job.lease.seq)
                logits.append(pos == len(job.history) - 1)
            if logits[-1]:
                samplers.append((job, len(tokens) - 1))
        try:
            self.backend.decode(tokens, positions, seqs, logits)
        except Exception:
            for job, _ in group:
                if job in self.running:
                    self._end(job, "error", drop=True)
            return
        self.steps += 1
        for job, count in group:
            job.evaluated += count
        for job, index in samplers:
            if job.cancelled:
                continue
            self._take(job, self.backend.sample(job.sampler, index))

    def _take(self, job: Job, token: int) -> None:
        assert job.scanner is not None
        if self.backend.is_end(token):
            self._end(job, "stop")
            return
        job.generated += 1
        self.tokens_generated += 1
        job.history.append(token)
        text, stopped = job.scanner.feed(job.decoder.decode(self.backend.piece(token)))
        if text:
            job.post(text)
        if stopped:
            self._end(job, "stop")
        elif job.generated >= job.limit:
            self._end(job, "length")

    def _end(self, job: Job, finish: str | None, *, drop: bool = False) -> None:
        """Finish `job` (finish None: it was cancelled) and give its sequence back."""
        assert job.lease is not None and job.scanner is not None
        if finish is not None and finish != "error":
            if finish != "stop":
                tail = job.scanner.feed(job.decoder.decode(b"", final=True))[0]
                tail += job.scanner.flush()
                if tail:
                    job.post(tail)
            job.post(Finished(finish, len(job.prompt), job.generated, job.lease.reused))
        elif finish == "error":
            job.post(Finished("error", len(job.prompt), job.generated, job.lease.reused))
        self.backend.free_sampler(job.sampler)
        job.sampler = None
        if drop:
            self.cache.drop(job.lease)
        else:
            self.cache.release(job.lease, job.history[:job.evaluated])
        self.running.remove(job)
        job.done()
