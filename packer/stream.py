"""The two byte streams under a bundle reader: the raw file and the decoded tar stream.

Both read into a BufferRing (reused buffers, no page fault per read) and hand out
memoryviews into it. The raw side walks zstd's frame structure and, when asked,
queues each chunk for the whole file's SHA-256 on its own thread; the decoded side
counts what the decoder produced against a byte budget (decompression bombs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

from packer.bufring import BufferRing
from packer.errors import BundleError, LimitExceeded
from packer.zstdframes import FrameWalker

# Raw reads are small enough that the buffer being filled stays in the CPU's cache (1 GiB
# read in 1 MiB pieces cost ~0.5 s of kernel copying here, in 128 KiB pieces ~0.15 s), and
# are handed to the file's hasher in batches of RAW_BATCH to keep this thread's overhead low.
RAW_CHUNK = 128 << 10
RAW_SLOTS = 32
RAW_BATCH = 8
CHUNK = 1 << 20  # decoded buffers: one member chunk each
SLOTS = 8  # decoded buffers in flight between the reading thread and the workers


class RawInput:
    """The raw bundle bytes as the decoder reads them: walked, optionally hashed and observed.

    `observer` sees each chunk as a memoryview that is valid only during the call.
    """

    def __init__(self, fileobj: BinaryIO, observer: Callable[[memoryview], None] | None,
                 digest: bool = False) -> None:
        self._f = fileobj
        self._readinto = getattr(fileobj, "readinto", None)
        self._observer = observer
        self.walker = FrameWalker()
        self.eof = False
        self.size = 0
        self._ring = BufferRing(RAW_SLOTS, RAW_CHUNK)
        self._hash = hashlib.sha256() if digest else None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bundle-file-sha256") if digest else None
        self._batch: list[memoryview] = []
        self._batch_slots: list[int] = []

    def read(self, n: int = -1) -> memoryview:
        """Up to `n` bytes (a view into the ring, valid until the next read)."""
        slot, buf = self._ring.acquire()
        want = min(n, len(buf)) if n and n > 0 else len(buf)
        if self._readinto is not None:
            got = self._readinto(buf[:want]) or 0
        else:
            data = self._f.read(want)
            got = len(data)
            buf[:got] = data
        data = buf[:got]
        if not got:
            self.eof = True
            self._flush()
            return data
        self.size += got
        self.walker.feed(data)
        if self._pool is not None:
            self._batch.append(data)
            self._batch_slots.append(slot)
            if len(self._batch) >= RAW_BATCH:
                self._flush()
        if self._observer is not None:
            self._observer(data)
        return data

    def hexdigest(self) -> str:
        """The SHA-256 of every byte read so far (only when opened with `digest=True`)."""
        if self._hash is None or self._pool is None:
            raise RuntimeError("the raw stream was opened without digest=True")
        self._flush()
        self._ring.drain()
        return self._pool.submit(self._hash.hexdigest).result()

    def _flush(self) -> None:
        # The batch's slots are not reused before this: RAW_BATCH < RAW_SLOTS - 1.
        if not self._batch or self._pool is None:
            return
        future = self._pool.submit(_update_all, self._hash, self._batch)
        for slot in self._batch_slots:
            self._ring.hold(slot, future)
        self._batch, self._batch_slots = [], []

    def close(self) -> None:
        """Stop the hashing thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._ring.abandon()


def _update_all(h: Any, views: list[memoryview]) -> None:
    for view in views:
        h.update(view)


class Decoded:
    """The decompressed tar stream in reused buffers, with a running byte budget."""

    def __init__(self, reader: Any, budget: int, on_eof: Callable[[], None], max_window: int,
                 on_corrupt: Callable[[], None]) -> None:
        self._r = reader
        self.max_window = max_window
        self._on_eof = on_eof  # raises a more precise error when the compressed stream is cut
        self._on_corrupt = on_corrupt  # raises NotABundle when the input never was a zstd stream
        self.ring = BufferRing(SLOTS, CHUNK)
        self._buf = memoryview(b"")
        self._pos = 0
        self.slot = -1  # the ring slot `_buf` lies in
        self.consumed = 0  # tar bytes handed out
        self.produced = 0  # bytes the decoder produced
        self.budget = budget
        # Called before a buffer is filled: whoever batches work on views submits it and
        # holds the views' slot there, before the ring can come round to it.
        self.before_fill: list[Callable[[], None]] = []

    def _fill(self) -> bool:
        import zstandard

        room = self.budget - self.produced
        if room <= 0:
            raise LimitExceeded("decompressed data exceeds what the manifest declares "
                                "(a decompression bomb or trailing data)")
        for flush in self.before_fill:
            flush()
        slot, buf = self.ring.acquire()
        try:
            n = self._r.readinto(buf[:min(len(buf), room)])
        except zstandard.ZstdError as exc:
            if "too much memory" in str(exc):
                raise LimitExceeded(f"zstd frame needs a window over the limit of {self.max_window} bytes "
                                    "(too much memory to decode)") from None
            self._on_corrupt()
            raise BundleError(f"corrupt zstd data ({exc})") from None
        if not n:
            self._on_eof()
            return False
        self.produced += n
        self._buf, self._pos, self.slot = buf[:n], 0, slot
        return True

    def exact(self, n: int, what: str) -> bytes:
        """Exactly `n` bytes (a copy), or BundleError naming `what` was truncated."""
        out = bytearray()
        while len(out) < n:
            if self._pos >= len(self._buf) and not self._fill():
                raise BundleError(f"truncated bundle (inside {what})")
            end = min(self._pos + n - len(out), len(self._buf))
            out += self._buf[self._pos:end]
            self._pos = end
        self.consumed += n
        return bytes(out)

    def some(self, n: int, what: str) -> memoryview:
        """Between 1 and `n` bytes (n > 0), a view into slot `self.slot` of the ring."""
        if self._pos >= len(self._buf) and not self._fill():
            raise BundleError(f"truncated bundle (inside {what})")
        end = min(self._pos + n, len(self._buf))
        out = self._buf[self._pos:end]
        self.consumed += end - self._pos
        self._pos = end
        return out

    def at_end(self) -> bool:
        """True when the decoder has nothing more to give."""
        return self._pos >= len(self._buf) and not self._fill()

    def hold(self, slot: int, future: Future) -> None:
        """Keep ring slot `slot` from reuse until `future` completes."""
        self.ring.hold(slot, future)
