"""A step attempt's output on disk, bounded: at most `max_bytes` in `log`, the part before it
in `log.1` (rotated), so a chatty or hostile command cannot fill the disk."""

from __future__ import annotations

import os
from pathlib import Path

import trio

DEFAULT_MAX_BYTES = 8 << 20
TAIL_BYTES = 2048
CHUNK_BYTES = 64 << 10


class StepLog:
    """Appends output to `path`, rotating it to `path.1` when it would pass `max_bytes`.

    Synchronous: the pump calls it through `trio.to_thread.run_sync`, a chunk at a time.
    """

    def __init__(self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES):
        self.path, self.max_bytes = path, max_bytes
        self._file = open(path, "wb")
        self._size = 0

    def write(self, data: bytes) -> None:
        """Append `data`, rotating first if it would not fit."""
        if self._size + len(data) > self.max_bytes and self._size:
            self._file.close()
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            self._file = open(self.path, "wb")
            self._size = 0
        data = data[-self.max_bytes:]
        self._file.write(data)
        self._file.flush()
        self._size += len(data)

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def last_line(self) -> str:
        """The last line written (at most 200 characters), for a failure's reason."""
        with open(self.path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - TAIL_BYTES))
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1][:200] if lines else ""


async def pump(stream: trio.abc.ReceiveStream, log: StepLog) -> None:
    """Copy `stream` into `log` until it ends."""
    while chunk := await stream.receive_some(CHUNK_BYTES):
        await trio.to_thread.run_sync(log.write, chunk)
