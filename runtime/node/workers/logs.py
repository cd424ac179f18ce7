"""Worker output to disk: a size-rotated log file and the pump that feeds it from a pipe.

`logs/{service}.log` holds the newest output, `.1` the previous file, up to
`.{backups}`; no file grows past `max_bytes`. The pump reads the child's pipe as
fast as it arrives and hands batches to a thread, so the child never waits on a
slow disk; if the disk falls more than `max_pending` bytes behind, output is
dropped and a marker line says how much.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5
DEFAULT_MAX_PENDING = 4 * 1024 * 1024
DEFAULT_TAIL_BYTES = 16 * 1024
READ_SIZE = 64 * 1024


class RotatingLog:
    """A blocking, size-bounded log file with numbered backups (call it from a thread)."""

    def __init__(self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 backups: int = DEFAULT_BACKUPS):
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes!r}")
        if backups < 0:
            raise ValueError(f"backups must be >= 0, got {backups!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._file: int | None = None
        self._size = 0

    def files(self) -> list[Path]:
        """The existing log files, newest first."""
        names = [self.path] + [self._backup(i) for i in range(1, self.backups + 1)]
        return [p for p in names if p.exists()]

    def write(self, data: bytes) -> None:
        """Append `data`, rotating first whenever it would push the file past max_bytes."""
        start, end = 0, len(data)
        while start < end:
            self._open()
            room = self.max_bytes - self._size
            if end - start <= room:
                self._write_all(data, start, end)
                return
            # Prefer ending a file on a line boundary; only a line longer than a whole
            # file is split.
            take = data.rfind(b"\n", start, start + room) + 1 - start if room > 0 else 0
            if take <= 0:
                take = room if self._size == 0 else 0
            self._write_all(data, start, start + take)
            start += take
            self._rotate()

    def close(self) -> None:
        """Close the current file; a later write reopens it."""
        if self._file is not None:
            os.close(self._file)
            self._file = None

    def _open(self) -> int:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                                 0o644)
            self._size = os.fstat(self._file).st_size
        return self._file

    def _write_all(self, data: bytes, start: int, end: int) -> None:
        view = memoryview(data)
        while start < end:
            written = os.write(self._file, view[start:end])  # type: ignore[arg-type]
            start += written
            self._size += written

    def _backup(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def _rotate(self) -> None:
        self.close()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for n in range(self.backups - 1, 0, -1):
            if self._backup(n).exists():
                os.replace(self._backup(n), self._backup(n + 1))
        if self.path.exists():
            os.replace(self.path, self._backup(1))


class LogTail:
    """The last few KiB of output kept in memory, for error messages."""

    def __init__(self, max_bytes: int = DEFAULT_TAIL_BYTES):
        self.max_bytes = max_bytes
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        """Remember `data`, forgetting the oldest bytes beyond max_bytes."""
        self._buf += data
        if len(self._buf) > self.max_bytes:
            del self._buf[: len(self._buf) - self.max_bytes]

    def lines(self, n: int = 20) -> list[str]:
        """The last `n` complete or partial lines, decoded leniently."""
        text = self._buf.decode("utf-8", "replace")
        return text.splitlines()[-n:] if n > 0 else []


def read_tail(path: Path, *, lines: int = 20, max_line: int = 500, max_bytes: int = 16 * 1024) -> tuple[str, ...]:
    """The last `lines` lines of the file at `path` (blocking), each cut to `max_line` characters;
    () when it does not exist. Reads at most `max_bytes` from its end, however large it is."""
    try:
        with open(path, "rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - max_bytes))
            data = file.read(max_bytes)
    except FileNotFoundError:
        return ()
    found = data.decode("utf-8", "replace").splitlines()
    if len(data) == max_bytes and size > max_bytes and found:
        found = found[1:]  # the first line read is likely cut
    return tuple(line[:max_line] for line in found[-lines:]) if lines > 0 else ()


class LogPump:
    """Moves a child's output from its pipe into a RotatingLog, keeping a LogTail."""

    def __init__(self, log: RotatingLog, *, max_pending: int = DEFAULT_MAX_PENDING,
                 tail_bytes: int = DEFAULT_TAIL_BYTES):
        self.log = log
        self.tail = LogTail(tail_bytes)
        self.max_pending = max_pending
        self.dropped = 0
        self.write_error: OSError | None = None
        self._pending = bytearray()
        self._doorbell_send, self._doorbell_recv = trio.open_memory_channel[None](1)

    def note(self, text: str) -> None:
        """Add a line of the supervisor's own (written in order with the output)."""
        self._add(f"[flowctl] {text}\n".encode())

    async def run(self, stream: trio.abc.ReceiveStream) -> None:
        """Read `stream` until EOF, writing batches in a thread; returns once all is on disk.

        Cancellation: stops reading; what was read but not written is lost.
        """
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_batches)
            async with stream, self._doorbell_send:
                self._ring()
                while chunk := await stream.receive_some(READ_SIZE):
                    self._add(chunk)

    async def flush(self) -> None:
        """Write whatever is pending (notes added after run() ended)."""
        await self._write_pending()

    async def aclose(self) -> None:
        """Flush and close the log file."""
        await self.flush()
        await trio.to_thread.run_sync(self.log.close)

    def _add(self, data: bytes) -> None:
        self.tail.feed(data)
        # Once something is dropped, drop everything until the writer catches up, so
        # the marker it writes sits exactly where the gap is.
        if self.dropped or len(self._pending) + len(data) > self.max_pending:
            self.dropped += len(data)
        else:
            self._pending += data
        self._ring()

    def _ring(self) -> None:
        try:
            self._doorbell_send.send_nowait(None)
        except (trio.WouldBlock, trio.ClosedResourceError):
            pass  # a wake-up is already queued, or run() is over and flush() will write

    async def _write_batches(self) -> None:
        async with self._doorbell_recv:
            async for _ in self._doorbell_recv:
                await self._write_pending()

    async def _write_pending(self) -> None:
        if not self._pending and not self.dropped:
            return
        batch, self._pending = bytes(self._pending), bytearray()
        if self.dropped:
            batch += f"[flowctl] {self.dropped} bytes of output dropped\n".encode()
            self.dropped = 0
        try:
            await trio.to_thread.run_sync(self.log.write, batch)
        except OSError as error:
            # A full or broken disk must not take the worker down; the tail still has it.
            self.write_error = error
