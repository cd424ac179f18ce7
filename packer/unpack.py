"""Extract a bundle: `unpack_bundle`, all or nothing.

Files go into a fresh staging directory beside the destination (created by us,
so it holds no links to follow), each opened with O_EXCL|O_NOFOLLOW; every byte
is checked against the manifest as it streams; only when the whole bundle has
been read and checked is the staging directory renamed into place. On any
failure the staging directory is removed and the destination is untouched.

Three threads share the work: this one reads, decodes and parses the tar stream;
one hashes the members; one creates directories and files and writes them. Chunks
are views into the reader's reused buffers, several in flight, each kept alive
until its write is done.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from packer.errors import PackerError
from packer.limits import Limits
from packer.manifest import FileEntry, Manifest
from packer.reader import BundleReader, open_bundle
from packer.signing import PublicKey
from packer.verify import check_signature

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def unpack_bundle(path: Path, dest: Path, *, limits: Limits = Limits(),
                  trusted_keys: Sequence[PublicKey] = (), require_signature: bool = False,
                  progress: Callable[[int], None] | None = None) -> Manifest:
    """Extract the bundle at `path` into `dest` (absent or empty); return its manifest.

    `progress` gets each increment of file bytes decoded.
    """
    dest = Path(dest).absolute()
    if dest.is_symlink() or dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise PackerError(f"{str(dest)!r} exists and is not an empty directory")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.unpack-{secrets.token_hex(4)}"
    staging.mkdir(mode=0o700)
    writer = _Writer(staging)
    try:
        try:
            with open(path, "rb", buffering=0) as f, open_bundle(f, limits=limits, source=str(path)) as reader:
                check_signature(reader, trusted_keys, require_signature)
                reader.before_fill(writer.flush_batch(reader))
                for entry, chunks in reader.iter_files(views=True):
                    writer.check()
                    whole = entry.size
                    for chunk in chunks:
                        if len(chunk) == whole:  # the whole file in one chunk: batched per buffer
                            writer.add(reader, entry, chunk)
                        else:
                            if whole >= 0:
                                writer.submit(writer.open, entry)
                                whole = -1
                            reader.hold(writer.submit(writer.write, chunk))
                        if progress is not None:
                            progress(len(chunk))
                    if entry.size == 0:
                        writer.add(reader, entry, b"")
                    elif whole < 0:
                        writer.submit(writer.close, entry)
                writer.flush_batch(reader)()
                manifest = reader.manifest
        finally:
            writer.shutdown()
        writer.check()
        os.chmod(staging, 0o755)
        os.rename(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


class _Writer:
    """Creates and writes the staged files on one thread, in the order they were submitted.

    A task never raises: the first error is kept (`check` re-raises it) and every later
    task does nothing, so the reading thread learns of it at its next file.
    """

    def __init__(self, staging: Path) -> None:
        self._staging = staging
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unpack-write")
        self._made: set[str] = set()
        self._fd = -1
        self.error: BaseException | None = None
        self._batch: list[tuple[FileEntry, bytes | memoryview]] = []  # whole small files of one buffer
        self._batch_slot = -1

    def add(self, reader: BundleReader, entry: FileEntry, data: bytes | memoryview) -> None:
        """Queue a whole file for `whole_many`, batched with the others of the same buffer."""
        if reader.chunk_slot != self._batch_slot:
            self.flush_batch(reader)()
            self._batch_slot = reader.chunk_slot
        self._batch.append((entry, data))

    def flush_batch(self, reader: BundleReader) -> Callable[[], None]:
        """A callback that submits the batch and holds its buffer until it is written."""
        def flush() -> None:
            if self._batch:
                batch, self._batch = self._batch, []
                reader.hold_slot(self._batch_slot, self.submit(self.whole_many, batch))
        return flush

    def submit(self, fn: Callable[..., None], *args: object):
        """Queue `fn(*args)` on the writer thread; the future completes without an exception."""
        return self._pool.submit(self._guard, fn, *args)

    def check(self) -> None:
        """Re-raise the first error a task met."""
        if self.error is not None:
            raise self.error

    def shutdown(self) -> None:
        """Run (or, after an error, drop) what is queued and stop the thread; close a file left open."""
        self._pool.shutdown(wait=True, cancel_futures=self.error is not None)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _guard(self, fn: Callable[..., None], *args: object) -> None:
        if self.error is not None:
            return
        try:
            fn(*args)
        except BaseException as exc:  # handed to the reading thread by check()
            self.error = exc

    def open(self, entry: FileEntry) -> None:
        """Create `entry`'s file (and its directories) for the writes that follow."""
        self._fd = self._create(entry)

    def write(self, chunk: bytes | memoryview) -> None:
        """Append `chunk` to the file opened last."""
        _write_all(self._fd, chunk)

    def close(self, entry: FileEntry) -> None:
        """Give the file opened last its mode and close it."""
        fd, self._fd = self._fd, -1
        try:
            os.fchmod(fd, entry.mode)
        finally:
            os.close(fd)

    def whole_many(self, batch: list[tuple[FileEntry, bytes | memoryview]]) -> None:
        """Create, write and close each file in one go."""
        for entry, data in batch:
            fd = self._create(entry)
            try:
                _write_all(fd, data)
                os.fchmod(fd, entry.mode)
            finally:
                os.close(fd)

    def _create(self, entry: FileEntry) -> int:
        parent = entry.path.rpartition("/")[0]
        if parent and parent not in self._made:
            os.makedirs(self._staging / parent, mode=0o755, exist_ok=True)
            self._made.add(parent)
        return os.open(self._staging / entry.path, _OPEN_FLAGS, 0o600)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    chunk = memoryview(data)
    while chunk:
        chunk = chunk[os.write(fd, chunk):]
