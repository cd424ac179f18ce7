"""Import the llama-chat modules from their bundle directory, and a fake model for them."""

from __future__ import annotations

import importlib
import sys
import threading
import time
from collections.abc import Iterator

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


class FakeBackend:
    """Cycles through `words`, one per token, taking `token_s` of CPU-free time per token."""

    adds_bos = True
    END = 999

    def __init__(self, words: list[str] | list[bytes], *, n_ctx: int = 4096, token_s: float = 0.0,
                 end_after: int | None = None):
        self.words = [w if isinstance(w, bytes) else w.encode() for w in words]
        self.n_ctx = n_ctx
        self.token_s = token_s
        self.end_after = end_after
        self.sampled = 0
        self.threads: set[int] = set()
        self.lock = threading.Lock()
        self.concurrent = 0
        self.max_concurrent = 0

    def tokenize(self, text: str, *, bos: bool = False, special: bool = False) -> list[int]:
        return ([1] if bos else []) + [ord(c) for c in text]

    def generate(self, tokens, sampling) -> Iterator[int]:
        with self.lock:
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            i = 0
            while True:
                self.threads.add(threading.get_ident())
                if self.token_s:
                    time.sleep(self.token_s)  # stands for the model's compute time
                self.sampled += 1
                if self.end_after is not None and i >= self.end_after:
                    yield self.END
                yield 1000 + i % len(self.words)
                i += 1
        finally:
            with self.lock:
                self.concurrent -= 1

    def piece(self, token: int) -> bytes:
        return self.words[token - 1000]

    def is_end(self, token: int) -> bool:
        return token == self.END

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        return [[1.0, 0.0] for _ in texts], sum(len(t) for t in texts)
