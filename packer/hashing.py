"""SHA-256 helpers: whole files, and a hasher that runs beside the caller in a thread.

hashlib releases the GIL on buffers over 2 KiB, so hashing a stream in a worker
thread overlaps with decompression or writing in the calling thread.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

CHUNK = 1 << 20
BIG_CHUNK = 4 << 20


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(BIG_CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


class BackgroundHasher:
    """SHA-256 of a stream whose chunks are hashed in one worker thread, in order.

    `update` waits for the previous chunk to be hashed, then hands over this one,
    so at most one chunk is in flight and the caller must not mutate it afterwards.
    Use as a context manager so the thread never outlives the caller.
    """

    def __init__(self, initial: bytes = b"") -> None:
        self._hash = hashlib.sha256(initial)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
        self._pending: Future[None] | None = None

    def __enter__(self) -> BackgroundHasher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, chunk: bytes | memoryview) -> None:
        """Queue `chunk` (hashed after every earlier chunk)."""
        self.wait()
        self._pending = self._pool.submit(self._hash.update, chunk)

    def wait(self) -> None:
        """Block until every queued chunk is hashed."""
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def hexdigest(self) -> str:
        """The digest of everything queued so far."""
        self.wait()
        return self._hash.hexdigest()

    def close(self) -> None:
        """Stop the worker thread."""
        self._pool.shutdown(wait=True)
