import os
import signal
import sys

import trio

from runtime.node.workers import orphans


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


async def test_sweep_stops_a_recorded_group_left_running(tmp_path):
    # A worker group as an agent killed with SIGKILL leaves it: its own session, with a child.
    script = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    proc = await trio.lowlevel.open_process([sys.executable, "-c", script], start_new_session=True)
    try:
        run = tmp_path / "run"
        orphans.record(run, "r1", proc.pid)
        with trio.fail_after(20):
            stopped = await orphans.sweep(run, grace_s=2)
            assert stopped == [proc.pid]
            assert await proc.wait() == -signal.SIGTERM
        assert not list(run.glob("*.pid"))
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


async def test_sweep_ignores_a_recycled_pid_and_junk(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "r1.pid").write_text(f"{os.getpid()} 1\n")  # our pid, but another start time
    (run / "r2.pid").write_text("garbage")
    with trio.fail_after(10):
        assert await orphans.sweep(run) == []
    assert alive(os.getpid()) and not list(run.glob("*.pid"))


async def test_forget(tmp_path):
    proc = await trio.lowlevel.open_process([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        orphans.record(tmp_path, "r1", proc.pid)
        orphans.forget(tmp_path, "r1")
        orphans.forget(tmp_path, "r1")
        assert await orphans.sweep(tmp_path) == []
    finally:
        proc.kill()
        await proc.wait()
