"""Noticing that a service directory changed: poll its files' mtimes and sizes, then debounce.

Polling (no inotify) works the same on every filesystem, bind mounts and editors' atomic
renames included. The walk follows the packer's ignore rules (`.flowctlignore`, `.git/`,
`__pycache__/`...) plus virtual environments, so a worker writing its bytecode does not
restart itself, and it stops at MAX_FILES so a huge tree costs a bounded amount per poll.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import trio

from packer.errors import PackerError
from packer.ignore import DEFAULT_PATTERNS, IgnoreRules

MAX_FILES = 5000
POLL_INTERVAL_S = 0.5
DEBOUNCE_S = 0.3
SETTLE_MAX_S = 5.0  # a tree that never holds still is restarted anyway after this long
SKIPPED_DIRS = frozenset({".venv", "venv", "node_modules", ".mypy_cache", ".pytest_cache", ".ruff_cache"})

Snapshot = dict[str, tuple[int, int, int]]  # path -> (mtime_ns, size, mode)


def snapshot(root: Path, *, max_files: int = MAX_FILES) -> Snapshot:
    """The watched files under `root` (at most `max_files`); {} when `root` is not a directory."""
    found: Snapshot = {}
    try:
        rules = IgnoreRules.for_source(root)
    except (OSError, PackerError):
        rules = IgnoreRules(DEFAULT_PATTERNS)  # a broken .flowctlignore: its edits still count
    stack = [""]
    while stack and len(found) < max_files:
        prefix = stack.pop()
        try:
            with os.scandir(root / prefix if prefix else root) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            rel = prefix + entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if (is_dir and entry.name in SKIPPED_DIRS) or rules.ignored(rel, is_dir=is_dir):
                continue
            if is_dir:
                stack.append(rel + "/")
            elif len(found) < max_files:
                found[rel] = (st.st_mtime_ns, st.st_size, st.st_mode)
    return found


async def wait_for_change(root: Path, before: Snapshot, *, interval: float = POLL_INTERVAL_S,
                          debounce: float = DEBOUNCE_S, settle_max: float = SETTLE_MAX_S) -> Snapshot:
    """Return the snapshot after the next change, once it held still for `debounce` seconds.

    An editor's save is often several writes (a temp file, a rename, a chmod): one restart
    for all of them. Bounded: after `settle_max` seconds of churn it returns anyway.
    """
    while True:
        await trio.sleep(interval)
        now = await trio.to_thread.run_sync(snapshot, root)
        if now != before:
            break
    with trio.move_on_after(settle_max):
        while True:
            await trio.sleep(debounce)
            later = await trio.to_thread.run_sync(snapshot, root)
            if later == now:
                break
            now = later
    return now
