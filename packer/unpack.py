"""Extract a bundle: `unpack_bundle`, all or nothing.

Files go into a fresh staging directory beside the destination (created by us,
so it holds no links to follow), each opened with O_EXCL|O_NOFOLLOW; every byte
is checked against the manifest as it streams; only when the whole bundle has
been read and checked is the staging directory renamed into place. On any
failure the staging directory is removed and the destination is untouched.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from packer.errors import PackerError
from packer.limits import Limits
from packer.manifest import Manifest
from packer.reader import open_bundle
from packer.signing import PublicKey
from packer.verify import check_signature

_INLINE_WRITE = 1 << 20  # smaller files are written in the reading thread
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def unpack_bundle(path: Path, dest: Path, *, limits: Limits = Limits(),
                  trusted_keys: Sequence[PublicKey] = (), require_signature: bool = False,
                  progress: Callable[[int], None] | None = None) -> Manifest:
    """Extract the bundle at `path` into `dest` (absent or empty); return its manifest.

    `progress` gets each increment of file bytes written.
    """
    dest = Path(dest).absolute()
    if dest.is_symlink() or dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise PackerError(f"{str(dest)!r} exists and is not an empty directory")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.unpack-{secrets.token_hex(4)}"
    staging.mkdir(mode=0o700)
    try:
        with open(path, "rb", buffering=0) as f, open_bundle(f, limits=limits, source=str(path)) as reader, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="unpack-write") as writer:
            check_signature(reader, trusted_keys, require_signature)
            made: set[str] = set()
            for entry, chunks in reader.iter_files():
                parent = entry.path.rpartition("/")[0]
                if parent and parent not in made:
                    os.makedirs(staging / parent, mode=0o755, exist_ok=True)
                    made.add(parent)
                fd = os.open(staging / entry.path, _OPEN_FLAGS, 0o600)
                try:
                    if entry.size > _INLINE_WRITE:
                        _write_behind(fd, chunks, writer, progress)
                    else:
                        for chunk in chunks:
                            _write_all(fd, chunk)
                            if progress is not None:
                                progress(len(chunk))
                    os.fchmod(fd, entry.mode)
                finally:
                    os.close(fd)
            manifest = reader.manifest
        os.chmod(staging, 0o755)
        os.rename(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _write_all(fd: int, chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:
        view = view[os.write(fd, view):]


def _write_behind(fd: int, chunks, writer: ThreadPoolExecutor, progress) -> None:
    # Chunk k is written in the writer thread while chunk k+1 is decompressed (and hashed
    # in the reader's thread); at most one write is in flight, and it ends before we return.
    pending: Future[None] | None = None
    try:
        for chunk in chunks:
            if pending is not None:
                pending.result()
            pending = writer.submit(_write_all, fd, chunk)
            if progress is not None:
                progress(len(chunk))
    finally:
        if pending is not None:
            pending.result()
