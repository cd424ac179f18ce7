"""Owner-only state: a data dir is 0700, its SQLite databases (and their -wal/-shm) 0600.

The modes are given at creation (`mkdir`/`os.open` with a mode, so they hold whatever the
umask) and tightened on every start, so a data dir written by an older flowctl, or under a
loose umask, is closed the first time a newer one opens it; each tightening is logged once
(the next start finds nothing to do). Only group and other bits are removed: the owner's
stay as they are.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("flowctl.store")

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
# SQLite gives these the database's own mode when it creates them; older ones may be looser.
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def make_private_dir(path: str | os.PathLike[str]) -> Path:
    """Create `path` (and missing parents) owner-only, or tighten it if it exists; returns it."""
    path = Path(path)
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    _tighten(path)
    return path


def make_private_database(path: str | os.PathLike[str]) -> Path:
    """Create the SQLite file `path` 0600 if missing (its dir 0700 if missing), else tighten
    it and its -wal/-shm/-journal; call before sqlite3.connect. Returns `path`."""
    path = Path(path)
    if not path.parent.exists():
        path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    # O_CREAT without O_TRUNC: an existing database is opened, never emptied.
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE))
    for member in (path, *(path.with_name(path.name + side) for side in SQLITE_SIDE_FILES)):
        _tighten(member)
    return path


def _tighten(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        os.chmod(path, mode & ~0o077)
        log.warning("%s was readable by others (mode %04o); now %04o", path, mode, mode & ~0o077)
