"""Disk space for a publish: refuse up front what cannot fit, and name a full disk as such.

A publish needs room for the upload (it becomes the bundle's blob) and then for the files
it unpacks that the store does not hold yet. Both are checked before they are written,
leaving `reserve_bytes` free, so a publish never fills the disk to the last byte (SQLite,
the logs and the rest of the machine need some too). A write that still runs out of space
(another writer took it meanwhile) is reported as `InsufficientStorage`, not as a crash.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hub_store.errors import InsufficientStorage

DEFAULT_RESERVE_BYTES = 256 << 20
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def disk_free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes available to an unprivileged user on the filesystem holding `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def is_disk_full(exc: BaseException) -> bool:
    """True for a write refused for lack of space: ENOSPC/EDQUOT, or SQLite's SQLITE_FULL."""
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return False


@dataclass(frozen=True)
class SpaceGuard:
    """Checks that `needed` bytes fit on `root`'s filesystem with `reserve_bytes` left over."""

    root: Path
    reserve_bytes: int = DEFAULT_RESERVE_BYTES
    free_bytes: Callable[[Path], int] = disk_free_bytes

    def require(self, needed: int, what: str) -> None:
        """Raise InsufficientStorage unless `needed` bytes fit above the reserve."""
        free = self.free_bytes(self.root)
        if needed + self.reserve_bytes > free:
            raise InsufficientStorage(what, needed=needed, free=free, reserve=self.reserve_bytes)
