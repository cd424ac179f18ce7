"""The firing engine, on a real SQLite file, with Trio's autojump clock for all timing."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import trio

from runtime.exception_groups import leaves
from runtime.jobs.engine import Event
from runtime.jobs.errors import LeaseLost, ParameterError
from runtime.jobs.executors import InProcessExecutor
from runtime.jobs.lease import SoloLease
from runtime.jobs.store import NewRun, scheduled_run_id

from .conftest import T0, WallClock, job, running


class Recorder:
    """A handler that notes when each attempt ran and behaves as the test scripts it."""

    def __init__(self, *, duration=0.0, fail_first=0, outcome=None):
        self.duration, self.fail_first, self.outcome = duration, fail_first, outcome
        self.calls = []  # (wall time, run_id, step, attempt)

    def __call__(self, wall):
        async def handle(order):
            self.calls.append((wall(), order.run_id, order.step.name, order.attempt))
            await trio.sleep(self.duration)
            if len([c for c in self.calls if c[1:3] == (order.run_id, order.step.name)]) <= self.fail_first:
                raise RuntimeError(f"scripted failure {order.attempt}")
            return self.outcome
        return handle


def _every(seconds, **policies):
    return job(trigger={"type": "interval", "every": seconds}, policies=policies)


async def test_interval_fires_on_time_with_deterministic_ids_and_none_twice_across_restarts(store, wall, autojump_clock):
    rec = Recorder()
    executor = InProcessExecutor(rec(wall))
    async with running(store, executor, wall) as engine:
        record, _ = await engine.apply(_every(10))
        await trio.sleep(35)
    async with running(store, executor, wall):  # a restart on the same file, at once
        await trio.sleep(30)
    fired = [int(t) for t, *_ in rec.calls]
    assert fired == [T0 + 10 * i for i in range(1, 7)]
    runs = store.runs(job_id=record.job_id)
    assert sorted(r.run_id for r in runs if r.state == "succeeded") == sorted(
        scheduled_run_id(record.job_id, t) for t in fired)
    assert all(r.state in ("succeeded", "pending") for r in runs)


async def test_misfire_run_once_after_an_outage_runs_the_latest_missed_fire_once(store, wall, autojump_clock):
    rec = Recorder()
    executor = InProcessExecutor(rec(wall))
    async with running(store, executor, wall) as engine:
        record, _ = await engine.apply(job(trigger={"type": "cron", "cron": "* * * * *"}))
        await trio.sleep(117)  # fires at +60; +120 is materialised ahead (the window is 5 s)
    await trio.sleep(3600)  # the plane is down for an hour
    async with running(store, executor, wall):
        await trio.sleep(30)
    # The latest missed fire (+3660) runs once at the restart (+3717), then the schedule resumes.
    assert [t - T0 for t, *_ in rec.calls] == [60, 3717, 3720]
    caught = store.run(rec.calls[1][1])
    assert (caught.fire_time, caught.state) == (T0 + 3660, "succeeded")
    skipped = [r for r in store.runs(job_id=record.job_id) if r.state == "skipped"]
    assert [r.fire_time for r in skipped] == [T0 + 120]  # the pre-materialised one, with a reason
    assert skipped[0].reason.startswith("misfire: fired at 2027-01-15T08:02:00+00:00")


@pytest.mark.parametrize(("misfire", "expected"), [
    ("skip", []), ({"policy": "catch_up", "max": 3}, [3480, 3540, 3600])])
async def test_misfire_skip_and_catch_up(store, wall, autojump_clock, misfire, expected):
    rec = Recorder()
    executor = InProcessExecutor(rec(wall))
    async with running(store, executor, wall) as engine:
        await engine.apply(job(trigger={"type": "cron", "cron": "* * * * *"}, policies={"misfire": misfire}))
    await trio.sleep(3630)
    async with running(store, executor, wall):
        await trio.sleep(20)
    assert [store.run(run_id).fire_time - T0 for _, run_id, *_ in rec.calls] == expected


async def test_a_caught_up_fire_older_than_the_starting_deadline_is_skipped(store, wall, autojump_clock):
    executor = InProcessExecutor(Recorder()(wall))
    async with running(store, executor, wall) as engine:
        record, _ = await engine.apply(job(trigger={"type": "cron", "cron": "0 * * * *"},
                                           policies={"starting_deadline": "10m"}))
    await trio.sleep(3600 * 3 + 1800)  # down from 08:00 to 11:30; the 11:00 fire is the one kept
    async with running(store, executor, wall):
        await trio.sleep(5)
    (run,) = store.runs(job_id=record.job_id)
    assert (run.fire_time, run.state) == (T0 + 3 * 3600, "skipped")
    assert run.reason.startswith("missed its starting deadline of 600 s")
    assert executor.orders == []


async def test_forbid_skips_a_fire_while_the_previous_run_is_active(store, wall, autojump_clock):
    rec = Recorder(duration=25)
    async with running(store, InProcessExecutor(rec(wall)), wall) as engine:
        record, _ = await engine.apply(_every(10, concurrency="forbid"))
        await trio.sleep(45)
    states = {r.fire_time - T0: (r.state, r.reason) for r in store.runs(job_id=record.job_id)}
    assert [t - T0 for t, *_ in rec.calls] == [10, 40]
    assert states[20][0] == states[30][0] == "skipped"
    assert states[20][1] == f"concurrency forbid: run {scheduled_run_id(record.job_id, T0 + 10)} is still running"
    assert states[10][0] == "succeeded"
    text = engine.metrics.render()
    assert 'flowctl_jobs_runs_total{tenant="default",state="skipped"} 2' in text
    assert 'flowctl_jobs_runs_total{tenant="default",state="succeeded"} 1' in text  # +40 is still running
    assert 'flowctl_jobs_fire_lateness_seconds_bucket{tenant="default",le="0.01"} 2' in text  # on time
    assert 'flowctl_jobs_attempt_seconds_count{state="succeeded"} 1' in text
    assert "flowctl_jobs_queue_depth 0" in text


async def test_replace_cancels_the_active_run(store, wall, autojump_clock):
    rec = Recorder(duration=25)
    async with running(store, InProcessExecutor(rec(wall)), wall) as engine:
        record, _ = await engine.apply(_every(10, concurrency="replace"))
        await trio.sleep(25)
    first, second = (store.run(scheduled_run_id(record.job_id, T0 + t)) for t in (10, 20))
    assert (first.state, first.reason) == ("cancelled", f"replaced by run {second.run_id}")
    (attempt,) = store.attempts(first.run_id)
    assert attempt.state == "cancelled" and [s.state for s in store.steps(first.run_id)] == ["cancelled"]
    assert [t - T0 for t, *_ in rec.calls] == [10, 20]


async def test_retries_back_off_exponentially_then_succeed(store, wall, autojump_clock):
    rec = Recorder(fail_first=2)
    async with running(store, InProcessExecutor(rec(wall)), wall) as engine:
        await engine.apply(job(policies={"retries": {"max_attempts": 3, "backoff": "2s", "jitter": 0}}))
        run_id = await engine.trigger("default", "j")
        run = await engine.wait_run(run_id)
    assert run.state == "succeeded"
    assert [(t - T0, n) for t, _, _, n in rec.calls] == [(0, 1), (2, 2), (6, 3)]
    assert [(a.attempt, a.state, a.epoch) for a in store.attempts(run_id)] == [
        (1, "failed", 1), (2, "failed", 1), (3, "succeeded", 1)]
    assert store.attempts(run_id)[0].reason == "scripted failure 1"


async def test_a_step_timeout_ends_the_attempt_timed_out(store, wall, autojump_clock):
    rec = Recorder(duration=1000)
    async with running(store, InProcessExecutor(rec(wall)), wall) as engine:
        await engine.apply(job(policies={"timeout": "30s", "retries": {"max_attempts": 2, "backoff": 5, "jitter": 0}}))
        run = await engine.wait_run(await engine.trigger("default", "j"))
    assert (run.state, run.finished_at - T0) == ("timed_out", 65)
    assert run.reason == "step 'main' timed_out: no result within the step timeout (30 s)"
    assert [a.state for a in store.attempts(run.run_id)] == ["timed_out", "timed_out"]


async def test_dag_steps_run_after_their_needs_and_a_failure_skips_dependents(store, wall, autojump_clock):
    rec = Recorder(duration=1)
    steps = [{"name": "d", "service": "e@1", "command": ["x"], "needs": ["b", "c"]},
             {"name": "b", "service": "e@1", "command": ["x"], "needs": ["a"]},
             {"name": "c", "service": "e@1", "command": ["x"], "needs": ["a"]},
             {"name": "a", "service": "e@1", "command": ["x"]}]
    async with running(store, InProcessExecutor(rec(wall)), wall) as engine:
        await engine.apply(job(steps=steps))
        run = await engine.wait_run(await engine.trigger("default", "j"))
        assert run.state == "succeeded"
        assert sorted((t - T0, s) for t, _, s, _ in rec.calls) == [(0, "a"), (1, "b"), (1, "c"), (2, "d")]
        failing = Recorder(fail_first=1)
        engine.executor.handler = failing(wall)
        run = await engine.wait_run(await engine.trigger("default", "j"))
    assert (run.state, run.reason) == ("failed", "step 'a' failed: scripted failure 1")
    assert {s.step: (s.state, s.reason) for s in store.steps(run.run_id)} == {
        "a": ("failed", "scripted failure 1"), "b": ("skipped", "need 'a' failed"),
        "c": ("skipped", "need 'a' failed"), "d": ("skipped", "need 'b' skipped")}


async def test_manual_parameters_and_a_chain_on_success(store, wall, autojump_clock):
    seen, chained = [], trio.Event()

    async def handle(order):
        seen.append((order.job, dict(order.params)))
        if order.job == "b":
            chained.set()

    async with running(store, InProcessExecutor(handle), wall) as engine:
        await engine.apply(job("a", parameters={"n": {"type": "int", "default": 1}}))
        await engine.apply(job("b", trigger={"type": "event", "event": "job_run_finished", "job": "a",
                                             "status": "succeeded"}))
        with pytest.raises(ParameterError, match="parameters.n: expected int, got 'x'"):
            await engine.trigger("default", "a", {"n": "x"})
        await engine.wait_run(await engine.trigger("default", "a", {"n": 5}))
        with trio.fail_after(10):
            await chained.wait()
    assert seen == [("a", {"n": 5}), ("b", {})]


async def test_cancel_stops_a_running_run(store, wall, autojump_clock):
    rec = Recorder(duration=1000)
    async with running(store, InProcessExecutor(rec(wall)), wall) as engine:
        await engine.apply(job())
        run_id = await engine.trigger("default", "j")
        await trio.sleep(3)
        run = await engine.cancel(run_id, reason="operator said so")
    assert (run.state, run.reason, run.finished_at - T0) == ("cancelled", "operator said so", 3)
    assert [a.state for a in store.attempts(run_id)] == ["cancelled"]


async def test_a_restart_mid_step_records_the_attempt_lost_and_retries_it_once(store, wall, autojump_clock):
    rec = Recorder(duration=20)
    executor = InProcessExecutor(rec(wall))
    async with running(store, executor, wall, lease=SoloLease(first_epoch=1)) as engine:
        await engine.apply(job(policies={"retries": {"max_attempts": 2, "backoff": 1, "jitter": 0}}))
        run_id = await engine.trigger("default", "j")
        await trio.sleep(5)  # attempt 1 is running when the plane stops
    async with running(store, executor, wall, lease=SoloLease(first_epoch=2)) as engine:
        run = await engine.wait_run(run_id)
    assert run.state == "succeeded"
    assert [(a.attempt, a.state, a.epoch) for a in store.attempts(run_id)] == [(1, "lost", 1), (2, "succeeded", 2)]
    assert [(o.attempt, o.epoch) for o in executor.orders] == [(1, 1), (2, 2)]  # nothing ran twice


async def test_the_fence_refuses_a_stale_leader_and_the_engine_stops(store, wall, autojump_clock):
    executor = InProcessExecutor(Recorder()(wall))
    executor.fence.check(2)  # a newer leader (epoch 2) has dispatched already
    with pytest.raises(BaseExceptionGroup) as info:
        async with running(store, executor, wall, lease=SoloLease(first_epoch=1)) as engine:
            await engine.apply(job())
            run_id = await engine.trigger("default", "j")
            await trio.sleep(10)
    (error,) = leaves(info.value)
    assert isinstance(error, LeaseLost)
    assert str(error) == "deposed: refused a dispatch from leader epoch 1; epoch 2 is current"
    (attempt,) = store.attempts(run_id)
    assert (attempt.state, attempt.epoch) == ("failed", 1)
    assert executor.orders == []


async def test_hot_reload_replans_a_changed_trigger_without_touching_a_running_run(store, wall, autojump_clock):
    rec = Recorder(duration=30)
    async with running(store, InProcessExecutor(rec(wall)), wall) as engine:
        record, _ = await engine.apply(_every(10))
        await trio.sleep(12)  # the run of +10 is running; +20 is materialised
        _, change = await engine.apply(_every(100))
        await trio.sleep(100)
    runs = {r.fire_time - T0: r for r in store.runs(job_id=record.job_id)}
    assert change == "updated" and sorted(runs) == [10, 100]
    assert runs[10].state == "succeeded" and runs[10].version == 1 and runs[100].version == 2


async def test_an_attempt_never_dispatched_before_a_restart_is_dispatched_after_it(store, wall, autojump_clock):
    rec = Recorder()
    executor = InProcessExecutor(rec(wall))
    record, _ = store.put_job(job(), now=T0)
    (run_id,) = store.materialise(record, [NewRun(T0, "manual")], now=T0)
    store.set_run_state(run_id, "running", now=T0, steps=["main"])  # the plane died right here:
    store.set_step_state(run_id, "main", "running")
    store.new_attempt(run_id, "main", now=T0)  # attempt 1 created, never dispatched
    async with running(store, executor, wall) as engine:
        run = await engine.wait_run(run_id)
    assert run.state == "succeeded"
    assert [(a.attempt, a.state) for a in store.attempts(run_id)] == [(1, "succeeded")]
    assert [o.attempt for o in executor.orders] == [1]


async def test_service_events_suspend_and_resume(store, wall, autojump_clock):
    rec = Recorder()
    async with running(store, InProcessExecutor(rec(wall)), wall) as engine:
        await engine.apply(job("on-publish", trigger={"type": "event", "event": "service_published",
                                                      "service": "echo"}))
        await engine.apply(_every(10))
        assert await engine.notify(Event("service_published", service="other")) == []
        (run_id,) = await engine.notify(Event("service_published", "default", service="echo"))
        assert (await engine.wait_run(run_id)).state == "succeeded"
        await trio.sleep(16)  # the interval job ran at +10; +20 is materialised (the window is 5 s)
        await engine.set_suspended("default", "j", True)
        await trio.sleep(30)
        await engine.set_suspended("default", "j", False)
        await trio.sleep(15)
    interval_fires = sorted(int(t) - T0 for t, run, *_ in rec.calls if run != run_id)
    assert interval_fires == [10, 50, 60]  # nothing from +16 to +46 (suspended), no catch-up after
    skipped = store.runs(states=["skipped"])
    assert [(r.fire_time - T0, r.reason) for r in skipped] == [(20, "job suspended")]


@pytest.mark.parametrize(("start", "expected"), [
    ((2026, 3, 28, 12), ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]),
    ((2026, 10, 24, 12), ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]),
])
async def test_a_0230_berlin_job_runs_once_on_each_dst_change_day(store, autojump_clock, start, expected):
    wall = WallClock(int(dt.datetime(*start, tzinfo=dt.UTC).timestamp()))
    rec = Recorder()
    async with running(store, InProcessExecutor(rec(wall)), wall, lease=SoloLease(ttl_s=86400), tick_s=3600) as engine:
        await engine.apply(job(trigger={"type": "cron", "cron": "30 2 * * *", "timezone": "Europe/Berlin"}))
        await trio.sleep(2 * 86400)
    berlin = ZoneInfo("Europe/Berlin")
    assert [dt.datetime.fromtimestamp(t, berlin).isoformat() for t, *_ in rec.calls] == expected
