"""supervise: restarts with backoff and the state reports, on real processes and in virtual time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from runtime.node.workers import supervisor
from runtime.node.workers.errors import WorkerExited, WorkerStartFailed
from runtime.node.workers.process import WorkerHandle, WorkerSpec
from runtime.node.workers.supervisor import WorkerState, next_backoff, supervise
from tests.polling import wait_until
from tests.runtime.node.workers.test_process import (  # noqa: F401 - the fixture is used by name
    assert_gone,
    make_spec,
    no_child_outlives_its_test,
    wait_for_file,
)

TIMEOUT = 15


def kinds(states: list[WorkerState]) -> list[str]:
    return [s.kind for s in states]


def test_backoff_doubles_up_to_the_cap_and_resets_after_a_stable_run():
    delay, seen = None, []
    for _ in range(6):
        delay = next_backoff(delay, uptime=1.0, initial=1.0, maximum=10.0, stable_after=60.0)
        seen.append(delay)
    assert seen == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert next_backoff(10.0, uptime=60.0, initial=1.0, maximum=10.0, stable_after=60.0) == 1.0
    assert next_backoff(None, uptime=0.0, initial=5.0, maximum=2.0, stable_after=1.0) == 2.0


async def test_ready_then_cancel_reports_stopped_and_leaves_nothing(tmp_path):
    spec = make_spec(tmp_path)
    states: list[WorkerState] = []
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(lambda task_status: supervise(
                spec, task_status=task_status, on_state=states.append))
            assert isinstance(handle, WorkerHandle)
            nursery.cancel_scope.cancel()
        await assert_gone(handle.pid)
    assert kinds(states) == ["starting", "ready", "stopped"]
    assert (states[1].pid, states[1].port, states[1].service_id) == (handle.pid, spec.port, "svc")


async def test_cancel_before_ready_stops_the_starting_worker(tmp_path):
    spec = make_spec(tmp_path, "never-healthy", timeout_s=30)
    states: list[WorkerState] = []
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: supervise(spec, on_state=states.append))
            pid = json.loads(await wait_for_file(spec.service_dir / "env.json"))["pid"]
            nursery.cancel_scope.cancel()
        await assert_gone(pid, within=0.5)
    assert kinds(states) == ["starting", "stopped"]


async def test_crashes_are_restarted_with_growing_backoff(tmp_path):
    spec = make_spec(tmp_path, "crash-after=0.3")
    states: list[WorkerState] = []
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: supervise(
                spec, task_status=task_status, on_state=states.append,
                backoff_initial=0.05, backoff_max=0.15, stable_after=30))
            await wait_until(lambda: kinds(states).count("ready") == 4)
            nursery.cancel_scope.cancel()
        await assert_gone(*[s.pid for s in states if s.kind == "ready"])
    cycle = ["starting", "ready", "crashed", "backoff"]
    assert kinds(states) == cycle * 3 + ["starting", "ready", "stopped"]
    crashed = [s for s in states if s.kind == "crashed"]
    assert [(s.code, s.reason) for s in crashed] == [(5, "exited with code 5")] * 3
    assert crashed[0].log_tail[-1] == "[flowctl] exited with code 5"
    assert [s.delay for s in states if s.kind == "backoff"] == [0.05, 0.1, 0.15]
    assert [s.restarts for s in states if s.kind == "ready"] == [0, 1, 2, 3]
    assert len({s.pid for s in states if s.kind == "ready"}) == 4


async def test_first_start_failure_reports_failed_and_raises(tmp_path):
    spec = make_spec(tmp_path, "exit3")
    states: list[WorkerState] = []
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            with pytest.raises(WorkerStartFailed) as caught:
                await nursery.start(lambda task_status: supervise(
                    spec, task_status=task_status, on_state=states.append))
    assert kinds(states) == ["starting", "failed"]
    assert (states[1].code, states[1].reason) == (3, "exited with code 3")
    assert "config is broken" in states[1].log_tail
    error = caught.value
    assert (error.service_id, error.version, error.code) == ("svc", "1.0.0", 3)
    assert "config is broken" in error.log_tail


async def test_failed_restart_counts_as_a_crash_and_is_retried(tmp_path):
    spec = make_spec(tmp_path, "crash-then-exit3")
    states: list[WorkerState] = []
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: supervise(
                spec, task_status=task_status, on_state=states.append,
                backoff_initial=0.05, backoff_max=1.0, stable_after=30))
            await wait_until(lambda: kinds(states).count("crashed") == 3)
            nursery.cancel_scope.cancel()
        await assert_gone(states[1].pid)
    crashed = [s for s in states if s.kind == "crashed"]
    assert [s.code for s in crashed] == [5, 3, 3]
    assert kinds(states)[:2] == ["starting", "ready"]
    assert kinds(states).count("ready") == 1 and kinds(states)[-1] == "stopped"
    assert [s.delay for s in states if s.kind == "backoff"][:3] == [0.05, 0.1, 0.2]


async def test_liveness_failure_restarts_the_worker(tmp_path):
    spec = make_spec(tmp_path)
    sick = spec.service_dir / "sick"
    states: list[WorkerState] = []

    def on_state(state: WorkerState) -> None:
        states.append(state)
        if state.kind == "ready" and state.restarts == 0:
            sick.write_text("1")
        elif state.kind == "crashed":
            sick.unlink()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: supervise(
                spec, task_status=task_status, on_state=on_state, backoff_initial=0.05,
                liveness_interval_s=0.05, liveness_failures=2))
            await wait_until(lambda: kinds(states).count("ready") == 2)
            nursery.cancel_scope.cancel()
        await assert_gone(*[s.pid for s in states if s.kind == "ready"])
    crashed = next(s for s in states if s.kind == "crashed")
    assert crashed.reason == "failed 2 health probes in a row (last: HTTP 503)"
    assert crashed.code == 0  # it exited on SIGTERM


async def test_backoff_resets_after_a_stable_run(monkeypatch, autojump_clock):
    # Virtual time, no process: run_worker is replaced by one that stays up for
    # the given number of seconds and then "exits".
    uptimes = iter([1.0, 1.0, 1.0, 100.0, 1.0])
    spec = WorkerSpec(service_id="svc", version="1.0.0", service_dir=Path("/nonexistent"),
                      command="python x.py", port=1, log_path=Path("/nonexistent/log"))

    async def fake_run_worker(spec, *, task_status, **options):
        task_status.started(WorkerHandle(spec.service_id, spec.version, 1234, spec.port))
        await trio.sleep(next(uptimes))
        raise WorkerExited(spec.service_id, spec.version, 1, [])

    monkeypatch.setattr(supervisor, "run_worker", fake_run_worker)
    states: list[WorkerState] = []
    fifth_backoff = trio.Event()

    def on_state(state: WorkerState) -> None:
        states.append(state)
        if kinds(states).count("backoff") == 5:
            fifth_backoff.set()

    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: supervise(
                spec, task_status=task_status, on_state=on_state,
                backoff_initial=1.0, backoff_max=60.0, stable_after=60.0))
            await fifth_backoff.wait()
            nursery.cancel_scope.cancel()
    assert [s.delay for s in states if s.kind == "backoff"] == [1.0, 2.0, 4.0, 1.0, 2.0]

