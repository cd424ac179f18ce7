"""Command steps as real local processes: exit codes, a missing command, the job contract's
environment, and a timeout or cancel stopping the whole process group."""

import subprocess
import sys
from functools import partial

import trio

from runtime.jobs.engine import JobEngine
from runtime.jobs.lease import SoloLease
from runtime.jobs.local_command import LocalCommandExecutor
from runtime.jobs.steplog import StepLog
from runtime.jobs.store import RunStore
from runtime.node.workers.pgroups import group_alive
from tests.polling import wait_until

from .conftest import job


async def _run(store, tmp_path, command, **extra):
    executor = LocalCommandExecutor(tmp_path / "attempts", workdir=tmp_path, grace_s=0.5)
    engine = JobEngine(store, executor, SoloLease())
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            steps = [{"name": "main", "service": "echo@stable", "command": command, "env": {"MODE": "fast"}}]
            await engine.apply(job(steps=steps, **extra))
            run = await engine.wait_run(await engine.trigger("default", "j"))
            nursery.cancel_scope.cancel()
    return run, store.attempts(run.run_id)


async def test_exit_codes_and_the_last_line_of_output(store, tmp_path):
    run, (attempt,) = await _run(store, tmp_path, ["sh", "-c", "echo working; echo 'disk full' >&2; exit 3"])
    assert (run.state, attempt.state, attempt.exit_code) == ("failed", "failed", 3)
    assert attempt.reason == "exit code 3: disk full"
    assert run.reason == "step 'main' failed: exit code 3: disk full"


async def test_a_missing_command_fails_with_the_reason_not_a_hang(store, tmp_path):
    run, (attempt,) = await _run(store, tmp_path, ["no-such-command-xyz"])
    assert run.state == "failed"
    assert attempt.reason.startswith("command not found: 'no-such-command-xyz'")


async def test_the_command_sees_the_job_contract_and_no_secrets(store, tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWCTL_ADMIN_KEY", "secret-admin-key")
    script = ("import os, pathlib; e = os.environ; "
              "pathlib.Path(e['FLOWCTL_OUTPUT_DIR'], 'out.txt').write_text("
              "'|'.join([e['FLOWCTL_STEP'], e['FLOWCTL_ATTEMPT'], e['FLOWCTL_EPOCH'], e['FLOWCTL_PARAM_N'], "
              "e['MODE'], str('FLOWCTL_ADMIN_KEY' in e)]))")
    run, (attempt,) = await _run(
        store, tmp_path, [sys.executable, "-c", script],
        parameters={"n": {"type": "int", "default": 7}})
    assert run.state == "succeeded", attempt.reason
    out = tmp_path / "attempts" / run.run_id / "main.1" / "output" / "out.txt"
    assert out.read_text() == "main|1|1|7|fast|False"


async def test_a_timeout_stops_the_whole_process_group(store, tmp_path):
    pidfile = tmp_path / "pid"
    command = ["sh", "-c", f"echo $$ > {pidfile}; sleep 60 & sleep 60; wait"]
    started = trio.current_time()
    run, (attempt,) = await _run(store, tmp_path, command, policies={"timeout": "1s"})
    assert (run.state, attempt.state) == ("timed_out", "timed_out")
    assert trio.current_time() - started < 2 + 0.5 + 1  # timeout + grace, with room for a slow machine
    assert not await group_alive(int(pidfile.read_text()))  # the background sleep too (zombies aside)


async def test_cancel_stops_the_process_group_within_two_seconds(store, tmp_path):
    pidfile = tmp_path / "pid"
    executor = LocalCommandExecutor(tmp_path / "attempts", workdir=tmp_path, grace_s=1.0)
    engine = JobEngine(store, executor, SoloLease())
    command = ["sh", "-c", f"echo $$ > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}; sleep 60 & sleep 60; wait"]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            await engine.apply(job(steps=[{"name": "main", "service": "echo@stable", "command": command}]))
            run_id = await engine.trigger("default", "j")
            await wait_until(pidfile.exists)
            started = trio.current_time()
            run = await engine.cancel(run_id)
            elapsed = trio.current_time() - started
            nursery.cancel_scope.cancel()
    assert run.state == "cancelled" and elapsed < 2
    assert [a.state for a in store.attempts(run_id)] == ["cancelled"]
    assert not await group_alive(int(pidfile.read_text()))


async def test_the_log_is_bounded_and_rotated(store, tmp_path):
    executor = LocalCommandExecutor(tmp_path / "attempts", workdir=tmp_path, log_max_bytes=10_000)
    engine = JobEngine(store, executor, SoloLease())
    script = "import sys\nfor i in range(5000): print(f'line {i}')\nsys.stdout.flush()\nsys.exit('done talking')"
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            await engine.apply(job(steps=[{"name": "main", "service": "echo@stable",
                                            "command": [sys.executable, "-c", script]}]))
            run = await engine.wait_run(await engine.trigger("default", "j"))
            nursery.cancel_scope.cancel()
    where = tmp_path / "attempts" / run.run_id / "main.1"
    # How the 48 KB arrive (one pipe read or many) decides where the rotation falls (or whether one
    # happened); either way at most 10,000 bytes a file are kept, and the end is kept.
    log = (where / "log").read_text()
    older = (where / "log.1").read_text() if (where / "log.1").exists() else ""
    assert len(log) <= 10_000 and len(older) <= 10_000
    assert (older + log).endswith("line 4999\ndone talking\n")
    assert run.reason == "step 'main' failed: exit code 1: done talking"


def test_the_step_log_rotates_once_full_and_keeps_a_chunk_larger_than_a_file_by_its_end(tmp_path):
    log = StepLog(tmp_path / "log", max_bytes=10)
    for piece in (b"abcdef", b"ghij", b"klm"):  # 6 + 4 fit; 3 more do not: rotated
        log.write(piece)
    log.write(b"0123456789ABCDEF")  # larger than a file: its last 10 bytes, after a rotation
    log.close()
    assert (tmp_path / "log.1").read_bytes() == b"klm" and (tmp_path / "log").read_bytes() == b"6789ABCDEF"


ENGINE_SCRIPT = """
import sys, trio
from pathlib import Path
from runtime.jobs import JobEngine, LocalCommandExecutor, RunStore, SoloLease, parse_job

async def main(data):
    store = RunStore(data / "jobs.db")
    engine = JobEngine(store, LocalCommandExecutor(data / "attempts", workdir=data), SoloLease())
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        spec = parse_job({"name": "j", "trigger": {"type": "manual"},
                          "policies": {"retries": {"max_attempts": 2, "backoff": "1s"}},
                          "steps": [{"name": "main", "service": "echo@stable", "command": sys.argv[2:]}]})
        await engine.apply(spec)
        print(await engine.trigger("default", "j"), flush=True)
        await trio.sleep_forever()

trio.run(main, Path(sys.argv[1]))
"""


async def test_a_plane_killed_mid_step_leaves_no_second_copy_running(store, tmp_path):
    """SIGKILL of the engine's process: the next engine stops the orphaned group, then retries."""
    marker = tmp_path / "first.pid"
    command = ["sh", "-c", f'if [ "$FLOWCTL_ATTEMPT" = 1 ]; then sleep 60 & echo $! > {marker}; wait; '
                           'else echo second attempt; fi']
    store.close()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            proc = await nursery.start(partial(trio.run_process, [sys.executable, "-c", ENGINE_SCRIPT,
                                                                  str(tmp_path), *command],
                                               stdout=subprocess.PIPE, check=False))
            pgid_file = tmp_path / "attempts"
            await wait_until(lambda: marker.exists() and marker.read_text().strip()
                             and any(pgid_file.glob("*/main.1/pgid")))
            proc.kill()  # SIGKILL: no clean-up of the step's process group
        orphan = int(marker.read_text())
        assert _running(orphan)
        again = RunStore(tmp_path / "jobs.db")
        try:
            (run,) = again.runs()
            assert run.state == "running"
            engine = JobEngine(again, LocalCommandExecutor(tmp_path / "attempts", workdir=tmp_path, grace_s=0.5),
                               SoloLease())
            async with trio.open_nursery() as nursery:
                await nursery.start(engine.run)
                run = await engine.wait_run(run.run_id)
                nursery.cancel_scope.cancel()
            attempts = again.attempts(run.run_id)
        finally:
            again.close()
    assert run.state == "succeeded"
    assert [(a.attempt, a.state) for a in attempts] == [(1, "lost"), (2, "succeeded")]
    assert not _running(orphan)


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
