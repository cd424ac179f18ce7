"""Inter-process exclusive locks on files opened without following symlinks.

A lock is `flock(LOCK_EX)` on `path`, opened with O_NOFOLLOW|O_CREAT so a
planted symlink cannot redirect it. The holder unlinks the file on release, so
a waiter that locked the old inode sees the path changed and tries again:
lock files never pile up and two holders are never possible.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

POLL_INITIAL = 0.01
POLL_MAX = 0.25


def try_lock(path: Path) -> int | None:
    """Take the lock without waiting: the open fd, or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    try:
        same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        # The previous holder unlinked it between our open and our flock.
        os.close(fd)
        return None
    return fd


def release(path: Path, fd: int) -> None:
    """Unlink the lock file while still holding it, then drop the lock."""
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)


@asynccontextmanager
async def hold_lock(path: Path, *, poll_max: float = POLL_MAX) -> AsyncIterator[None]:
    """Hold the exclusive lock on `path` for the block; waits (cancellably) while it is taken.

    Cancellation: waiting polls with trio.sleep, so it is cancellable at once.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    delay = POLL_INITIAL
    while (fd := try_lock(path)) is None:
        await trio.sleep(delay)
        delay = min(delay * 2, poll_max)
    try:
        yield
    finally:
        release(path, fd)
