"""Attempt logs on the plane, as nodes stream them: appended, rotated once past a size, and a
broadcast shard's lines marked with its index in the attempt's combined log."""

from __future__ import annotations

from pathlib import Path


def append_log(path: Path, data: bytes, max_bytes: int) -> None:
    """Append `data` to the log at `path`, first moving a log that would pass `max_bytes` to `log.1`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = 0
    if size and size + len(data) > max_bytes:
        path.replace(path.with_name(path.name + ".1"))
    with path.open("ab") as f:
        f.write(data)


def prefixed(data: str, prefix: str) -> str:
    """Each line of a log piece marked with `prefix` (a line split across pieces is marked twice)."""
    body = data[:-1] if data.endswith("\n") else data
    return prefix + body.replace("\n", "\n" + prefix) + ("\n" if data.endswith("\n") else "")
