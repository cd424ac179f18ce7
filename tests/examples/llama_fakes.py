"""Import the llama-chat modules from their bundle directory, and a fake model for them."""

from __future__ import annotations

import importlib
import sys
import threading
import time
from dataclasses import dataclass

from tests.examples.workers import EXAMPLES

LLAMA_DIR = EXAMPLES / "llama-chat"


def import_llama_module(name: str):
    """Import one of examples/llama-chat/*.py (they import each other by plain name)."""
    path = str(LLAMA_DIR)
    sys.path.insert(0, path)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(path)


@dataclass
class FakeSampler:
    """A sequence's sampler: which word comes next."""

    next: int = 0


class FakeBackend:
    """Cycles through `words`, one per token, for every sequence, taking `token_s` per decode.

    It keeps what a real KV cache would hold per sequence id (`kv`), checks that positions
    follow on from it, and records every batch, so tests see what was batched and reused.
    """

    adds_bos = True
    END = 999

    def __init__(self, words: list[str] | list[bytes], *, n_ctx: int = 4096, token_s: float = 0.0,
                 end_after: int | None = None, parallel: int = 4, chunk: int = 64,
                 n_seq: int | None = None, kv_tokens: int | None = None):
        self.words = [w if isinstance(w, bytes) else w.encode() for w in words]
        self.n_ctx = n_ctx
        self.token_s = token_s
        self.end_after = end_after
        self.parallel = parallel
        self.chunk = chunk
        self.n_seq = n_seq or 2 * parallel
        self.kv_tokens = kv_tokens or parallel * n_ctx
        self.kv: dict[int, list[int]] = {}
        self.batches: list[list[tuple[int, int, int]]] = []  # (token, pos, seq) per decode
        self.sampled = 0
        self.threads: set[int] = set()
        self.samplers_alive = 0
        self.lock = threading.Lock()

    def tokenize(self, text: str, *, bos: bool = False, special: bool = False) -> list[int]:
        return ([1] if bos else []) + [ord(c) for c in text]

    def new_sampler(self, sampling, history) -> FakeSampler:
        self.samplers_alive += 1
        return FakeSampler()

    def free_sampler(self, sampler: FakeSampler) -> None:
        self.samplers_alive -= 1

    def decode(self, tokens, positions, seqs, logits) -> None:
        self.threads.add(threading.get_ident())
        if self.token_s:
            time.sleep(self.token_s)  # stands for the model's compute time
        for token, pos, seq in zip(tokens, positions, seqs, strict=True):
            held = self.kv.setdefault(seq, [])
            assert pos == len(held), f"seq {seq}: position {pos} after {len(held)} cached tokens"
            held.append(token)
        with self.lock:
            self.batches.append(list(zip(tokens, positions, seqs, strict=True)))

    def sample(self, sampler: FakeSampler, index: int) -> int:
        self.sampled += 1
        i = sampler.next
        sampler.next += 1
        if self.end_after is not None and i >= self.end_after:
            return self.END
        return 1000 + i % len(self.words)

    def forget(self, seq: int, start: int) -> bool:
        del self.kv.setdefault(seq, [])[start:]
        return True

    def piece(self, token: int) -> bytes:
        return self.words[token - 1000]

    def is_end(self, token: int) -> bool:
        return token == self.END

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        return [[1.0, 0.0] for _ in texts], sum(len(t) for t in texts)

    def max_sequences_per_decode(self) -> int:
        """The most sequences one decode call carried."""
        with self.lock:
            return max((len({seq for _, _, seq in b}) for b in self.batches), default=0)
