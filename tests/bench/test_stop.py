"""A bench stopped by SIGTERM (as `timeout` does) or killed stops every process it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.polling import wait_until

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _children(pid: int) -> set[int]:
    """Every live descendant of `pid` (by the parent ids in /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start(tmp: Path, out: Path, args: tuple[str, ...] = ("gateway.py", "--duration", "30")) -> subprocess.Popen:
    # TMPDIR: what a killed bench cannot delete lands in the test's own directory.
    with open(out, "wb") as log:
        return subprocess.Popen([sys.executable, str(BENCH / args[0]), *args[1:]],
                                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(tmp)})


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
async def test_gateway_bench_leaves_nothing_running(how: signal.Signals, tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    bench = _start(tmp_path, out)
    try:
        with trio.fail_after(120):
            await wait_until(lambda: b"non-streaming" in out.read_bytes() or bench.poll() is not None,
                             interval=0.1)
            assert bench.poll() is None, out.read_text()
            await wait_until(lambda: len(_children(bench.pid)) >= 2, interval=0.1)  # plane child + worker
            started = _children(bench.pid)
            bench.send_signal(how)
            await trio.to_thread.run_sync(bench.wait)
            await wait_until(lambda: not any(_alive(p) for p in started), interval=0.1)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
async def test_jobs_bench_leaves_nothing_running(how: signal.Signals, tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    # A few jobs and nodes: stopped while it fires them.
    bench = _start(tmp_path, out, ("jobs.py", "--only", "firing", "--jobs", "60", "--nodes", "2", "--duration", "30"))
    try:
        with trio.fail_after(120):
            await wait_until(lambda: b"simulated nodes connected" in out.read_bytes() or bench.poll() is not None,
                             interval=0.1)
            assert bench.poll() is None, out.read_text()
            started = _children(bench.pid)
            assert started  # the plane
            bench.send_signal(how)
            await trio.to_thread.run_sync(bench.wait)
            await wait_until(lambda: not any(_alive(p) for p in started), interval=0.1)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
