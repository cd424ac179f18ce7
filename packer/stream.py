"""The two byte streams under a bundle reader: the raw file and the decoded tar stream.

Both read into a BufferRing (reused buffers, no page fault per read) and hand out
memoryviews into it. The raw side walks zstd's frame structure and, when asked,
hashes the whole file; the decoded side counts what the decoder produced against a
byte budget (decompression bombs). From a regular file the raw side runs on its own
thread (read, walk, hash, each chunk while it is still in that core's cache), several
chunks ahead of the decoder: the decoding thread was verify's critical path (the
decoder alone is a third of its CPU); from any other stream the chunks are hashed on a
worker thread in batches.
"""

from __future__ import annotations

import hashlib
import os
import queue
import stat
import threading
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
        self._pool: ThreadPoolExecutor | None = None
        self._batch: list[memoryview] = []
        self._batch_slots: list[int] = []
        self._ahead: _ReadAhead | None = None
        if self._readinto is not None and _is_regular_file(fileobj):
            self._ahead = _ReadAhead(self._readinto, self._ring, self.walker, self._hash)
        elif digest:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bundle-file-sha256")

    def read(self, n: int = -1) -> memoryview:
        """Up to `n` bytes (a view into the ring, valid until the next read)."""
        if self._ahead is not None:
            return self._read_ahead()
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

    def _read_ahead(self) -> memoryview:
        assert self._ahead is not None
        if self.eof:
            return memoryview(b"")
        data = self._ahead.next()
        if not data:
            self.eof = True
            return data
        self.size += len(data)
        if self._observer is not None:
            self._observer(data)
        return data

    @property
    def reads_ahead(self) -> bool:
        """True when a thread reads the file ahead of the decoder (a regular file)."""
        return self._ahead is not None

    def hexdigest(self) -> str:
        """The SHA-256 of every byte read so far (only when opened with `digest=True`)."""
        if self._hash is None:
            raise RuntimeError("the raw stream was opened without digest=True")
        if self._ahead is not None:
            if not self.eof:
                raise RuntimeError("the file's digest is known only once it was read to the end")
            return self._hash.hexdigest()  # the reading thread has finished: it sent the end
        assert self._pool is not None
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
        """Stop the reading or hashing thread."""
        if self._ahead is not None:
            self._ahead.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._ring.abandon()


class _DecodeAhead:
    """The decoder on its own thread: fills the buffers the reader hands back, queues them.

    The reader returns a buffer's slot only after the work it queued on it holds the slot
    (`before_fill`), and this thread waits for those holds before refilling it, as
    `BufferRing.acquire` does. Errors (zstd's, the budget's, a digest mismatch met in a
    hold) are queued in order and raised by `next()`.
    """

    def __init__(self, decoded: Decoded, free: list[int]) -> None:
        self._d = decoded
        self._free: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        for slot in free:
            self._free.put(slot)
        self._filled: queue.SimpleQueue[tuple[int, int] | BaseException | None] = queue.SimpleQueue()
        self._end: BaseException | None = None
        self._done = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="bundle-decode", daemon=True)
        self._thread.start()

    def next(self, returned: int) -> tuple[int, int] | None:
        """Hand back slot `returned` (-1: none); the next (slot, length) decoded, None at the end."""
        if self._done:
            if self._end is not None:
                raise self._end
            return None
        if returned >= 0:
            self._free.put(returned)
        item = self._filled.get()
        if isinstance(item, BaseException):
            self._done, self._end = True, item
            raise item
        if item is None:
            self._done = True
        return item

    def _run(self) -> None:
        d = self._d
        try:
            while True:
                slot = self._free.get()
                if slot is None or self._stopping:
                    return
                d.ring.wait(slot)
                room = d._room()
                n = d._decode_into(d.ring.view(slot)[:room])
                if not n:
                    d._on_eof()
                    self._filled.put(None)
                    return
                d.produced += n
                self._filled.put((slot, n))
        except BaseException as exc:  # raised by the reader, in order
            self._filled.put(exc)

    def stop(self) -> None:
        """Ask the thread to end at its next buffer."""
        self._stopping = True
        self._free.put(None)

    def join(self) -> None:
        """Wait for the thread."""
        self._thread.join()


def _is_regular_file(fileobj: Any) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fileobj.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):
        return False


class _ReadAhead:
    """A thread that reads a regular file into the ring, walks and hashes each chunk, and queues it.

    The decoder holds the chunk it was given last until it asks for the next, so with at
    most `RAW_SLOTS - 2` chunks queued the one being filled is never one still in use.
    An error (a read error, a malformed frame) is queued in the chunk's place and raised
    by `next()`, so it surfaces in order, where the decoder would have met it.
    """

    def __init__(self, readinto: Callable[[memoryview], int | None], ring: BufferRing,
                 walker: FrameWalker, digest: Any) -> None:
        self._readinto = readinto
        self._views = [ring.acquire()[1] for _ in range(RAW_SLOTS)]
        self._walker = walker
        self._hash = digest
        self._queue: queue.Queue[memoryview | BaseException] = queue.Queue(maxsize=RAW_SLOTS - 2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bundle-read", daemon=True)
        self._thread.start()

    def next(self) -> memoryview:
        """The next chunk (empty at the end of the file)."""
        while True:
            try:
                item = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                if self._stop.is_set():
                    raise BundleError("the bundle reader was closed") from None
        if isinstance(item, BaseException):
            self._queue.put(item)  # every later call raises it too
            raise item
        if not item:
            self._thread.join()  # it has updated the hash with every chunk
        return item

    def _run(self) -> None:
        try:
            slot = 0
            while not self._stop.is_set():
                buf = self._views[slot]
                slot = (slot + 1) % RAW_SLOTS
                data = buf[:self._readinto(buf) or 0]
                if data:
                    self._walker.feed(data)
                    if self._hash is not None:
                        self._hash.update(data)
                self._put(data)
                if not data:
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)

    def _put(self, item: memoryview | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Stop the thread (whatever it had not handed over is dropped)."""
        self._stop.set()
        self._thread.join()


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
        self._ahead: _DecodeAhead | None = None

    def decode_ahead(self) -> None:
        """From now on decode on a thread of its own, up to SLOTS - 1 buffers ahead of the reader.

        Only once the budget is final (after the manifest), and only over a raw input that
        reads ahead itself (so the decoder never touches the caller's file object from the thread).
        """
        free = [(self.slot + i) % SLOTS for i in range(1, SLOTS)] if self.slot >= 0 else list(range(SLOTS))
        self._ahead = _DecodeAhead(self, free)

    def _fill(self) -> bool:
        if self._ahead is not None:
            for flush in self.before_fill:
                flush()
            got = self._ahead.next(self.slot)
            if got is None:
                return False
            slot, n = got
            self._buf, self._pos, self.slot = self.ring.view(slot)[:n], 0, slot
            return True
        room = self._room()
        for flush in self.before_fill:
            flush()
        slot, buf = self.ring.acquire()
        n = self._decode_into(buf[:room])
        if not n:
            self._on_eof()
            return False
        self.produced += n
        self._buf, self._pos, self.slot = buf[:n], 0, slot
        return True

    def _room(self) -> int:
        room = self.budget - self.produced
        if room <= 0:
            raise LimitExceeded("decompressed data exceeds what the manifest declares "
                                "(a decompression bomb or trailing data)")
        return room

    def _decode_into(self, buf: memoryview) -> int:
        import zstandard

        try:
            return int(self._r.readinto(buf))
        except zstandard.ZstdError as exc:
            if "too much memory" in str(exc):
                raise LimitExceeded(f"zstd frame needs a window over the limit of {self.max_window} bytes "
                                    "(too much memory to decode)") from None
            self._on_corrupt()
            raise BundleError(f"corrupt zstd data ({exc})") from None

    def close(self) -> None:
        """Stop the decoding thread, if any (the raw input must be closed before `join`)."""
        if self._ahead is not None:
            self._ahead.stop()

    def join(self) -> None:
        """Wait for the decoding thread to end."""
        if self._ahead is not None:
            self._ahead.join()

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
