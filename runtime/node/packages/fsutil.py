"""Crash-safe filesystem steps: fsync, atomic symlink swap, link-or-copy. All blocking."""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Literal

CHUNK = 1 << 20
FILE_MODE = 0o444
EXEC_MODE = 0o555


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so the entries created or renamed in it survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_durably(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Write a new file, chmod it and fsync it (its directory is the caller's to fsync)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)


def link_or_copy(src: Path, dst: Path, *, mode: int) -> bool:
    """Hard-link `src` to `dst` when it can keep `mode`, else copy; True when linked.

    A hard link shares the inode, so only a file whose mode already matches is
    linked (blobs are 0444); an executable gets its own 0555 copy.
    """
    if stat.S_IMODE(src.stat().st_mode) == mode:
        try:
            os.link(src, dst)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
    copy_durably(src, dst, mode=mode)
    return False


def copy_durably(src: Path, dst: Path, *, mode: int) -> None:
    """Copy a file's bytes to a new file, set `mode`, fsync."""
    with open(src, "rb") as fin:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with open(fd, "wb", closefd=True) as fout:
            shutil.copyfileobj(fin, fout, CHUNK)
            fout.flush()
            os.fchmod(fout.fileno(), mode)
            os.fsync(fout.fileno())


def swap_symlink(link: Path, target: str) -> None:
    """Point `link` at `target` atomically: a temp symlink renamed over it, then fsync the dir."""
    temp = link.with_name(f".{link.name}-tmp-{secrets.token_hex(6)}")
    os.symlink(target, temp)
    try:
        os.replace(temp, link)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(link.parent)


def remove_tree(path: Path) -> None:
    """Remove a directory tree (or a file/symlink); missing is fine."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, onerror=_ignore_missing)


def _ignore_missing(func: object, path: str, exc_info: tuple) -> None:
    # Another process may be removing the same leftover tree.
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]


def free_space(path: str | os.PathLike[str]) -> int:
    """Bytes available to an unprivileged user on the filesystem holding `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


_SYNC_FILE_RANGE_WRITE = 2
_libc: Callable[[int, int, int, int], int] | Literal[False] | None = None  # False: unavailable


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range to disk now (Linux sync_file_range); best effort.

    A later fsync then finds little left to flush, so a large download's final fsync
    does not add a full disk write after the last byte arrives.
    """
    global _libc
    if _libc is None:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.sync_file_range
            fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
            _libc = fn
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc(fd, offset, length, _SYNC_FILE_RANGE_WRITE)
