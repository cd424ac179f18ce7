"""Workers left behind by a node agent that was killed outright (SIGKILL, OOM, power cut).

Workers run in their own process group so a stop reaches their children too;
that also means they survive an agent killed with SIGKILL. The executor records
each running worker's group (pid plus its start time, so a recycled pid is never
mistaken for it) under `DATA_DIR/node/run/`, and a node starting up stops the
groups that a previous agent left running before it starts anything new.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import trio

from runtime.node.workers.pgroups import stop_group

log = logging.getLogger("flowctl.node")
SWEEP_GRACE_S = 5.0


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def record(run_dir: Path, name: str, pid: int) -> None:
    """Remember that worker group `pid` runs for `name` (a replica id)."""
    started = _start_time(pid)
    if started is None:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{name}.pid.tmp"
    tmp.write_text(f"{pid} {started}\n")
    os.replace(tmp, run_dir / f"{name}.pid")


def forget(run_dir: Path, name: str) -> None:
    """The worker of `name` stopped normally."""
    with contextlib.suppress(FileNotFoundError):
        (run_dir / f"{name}.pid").unlink()


def _leftovers(run_dir: Path) -> list[int]:
    """Recorded worker groups that still run as the same process; the records are removed."""
    alive = []
    for path in sorted(run_dir.glob("*.pid")) if run_dir.is_dir() else []:
        try:
            pid_text, started = path.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            pid, started = 0, ""
        if pid > 1 and _start_time(pid) == started:
            alive.append(pid)
        path.unlink(missing_ok=True)
    return alive


async def sweep(run_dir: Path, *, grace_s: float = SWEEP_GRACE_S) -> list[int]:
    """Stop every recorded worker group that is still the same process; returns their pids."""
    leftovers = await trio.to_thread.run_sync(_leftovers, run_dir)
    for pid in leftovers:
        log.warning("stopping worker group %d left running by a previous node agent", pid)
        await stop_group(pid, grace_s=grace_s)
    return leftovers
