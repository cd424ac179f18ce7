"""Reading step attempt logs for the API: whole (`log.1` then `log`), or followed as
server-sent events while the run goes on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import trio

from runtime.jobs.store import RunStore

FOLLOW_POLL_S = 0.2
KEEPALIVE_S = 15.0
FINAL_ATTEMPT = frozenset({"succeeded", "failed", "timed_out", "cancelled", "lost"})
FINAL_RUN = frozenset({"succeeded", "failed", "timed_out", "cancelled", "skipped"})
LogPath = Callable[[str, str, int], Path]


def read_log(path: Path) -> str:
    """The whole log of an attempt, the rotated part first."""
    parts = []
    for part in (path.with_name(path.name + ".1"), path):
        try:
            parts.append(part.read_bytes().decode("utf-8", "replace"))
        except FileNotFoundError:
            continue
    return "".join(parts)


async def follow(store: RunStore, log_path: LogPath, run_id: str, steps: list[str],
                  only: int | None) -> AsyncIterator[bytes]:
    """SSE: `event: attempt` when an attempt's log starts, its lines as `data:`, `event: end` with
    the run's final state. Ends with the run (the client's disconnect ends it sooner)."""
    offsets: dict[tuple[str, int], int] = {}
    done: set[tuple[str, int]] = set()
    partial_line: dict[tuple[str, int], bytes] = {}
    quiet_since = trio.current_time()
    while True:
        run = await trio.to_thread.run_sync(store.run, run_id)
        attempts = await trio.to_thread.run_sync(store.attempts, run_id)
        sent = False
        for a in sorted(attempts, key=lambda a: (steps.index(a.step) if a.step in steps else -1, a.attempt)):
            key = (a.step, a.attempt)
            if a.step not in steps or key in done or (only is not None and a.attempt != only):
                continue
            if key not in offsets:
                offsets[key] = 0
                yield _sse({"step": a.step, "attempt": a.attempt}, event="attempt")
                sent = True
            chunk, offsets[key] = await trio.to_thread.run_sync(_read_from, log_path(run_id, *key), offsets[key])
            lines = (partial_line.pop(key, b"") + chunk).split(b"\n")
            if lines[-1]:
                partial_line[key] = lines[-1]
            for line in lines[:-1]:
                yield b"data: " + line.decode("utf-8", "replace").encode() + b"\n\n"
                sent = True
            if a.state in FINAL_ATTEMPT and not chunk:
                if key in partial_line:
                    yield b"data: " + partial_line.pop(key).decode("utf-8", "replace").encode() + b"\n\n"
                done.add(key)
        if run.state in FINAL_RUN and all(
                (a.step, a.attempt) in done or a.step not in steps or (only is not None and a.attempt != only)
                for a in attempts):
            yield _sse({"state": run.state, "reason": run.reason}, event="end")
            return
        now = trio.current_time()
        if sent:
            quiet_since = now
        elif now - quiet_since > KEEPALIVE_S:
            quiet_since = now
            yield b": keepalive\n\n"
        await trio.sleep(FOLLOW_POLL_S)


def _read_from(path: Path, offset: int) -> tuple[bytes, int]:
    """New bytes of a log from `offset`; a log that was rotated (shorter now) is read from its start."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            if size < offset:
                offset = 0
            f.seek(offset)
            data = f.read(1 << 20)
            return data, offset + len(data)
    except FileNotFoundError:
        return b"", offset


def _sse(data: dict[str, Any], *, event: str) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()
