"""Fires prepared ahead of their due time (the engine's `prepare_s`): the run is started early,
the step's attempt is created (and, for an executor that holds itself, handed over) early, and
nothing starts before the due time; policies with a decision to make still make it on time."""

import pytest
import trio

from runtime.jobs.dispatch import AttemptOrder, Outcome, Started, hold
from runtime.jobs.executors import ByKindExecutor, InProcessExecutor
from runtime.jobs.store import NewRun, scheduled_run_id

from .conftest import T0, job, running

PREPARE_S = 0.5


def _every(seconds, **extra):
    return job(trigger={"type": "interval", "every": seconds}, **extra)


async def _until(wall, at):
    await trio.sleep(at - wall())


class Handler:
    """Notes the wall time of each call; takes `duration` seconds."""

    def __init__(self, wall, duration=0.0):
        self.wall, self.duration, self.calls, self.orders = wall, duration, [], []

    async def __call__(self, order):
        self.calls.append(self.wall() - T0)
        self.orders.append(order)
        await trio.sleep(self.duration)


class HoldingExecutor:
    """Takes the order as soon as it is dispatched, as a node executor does, and holds it itself
    until its `not_before` before running it (its handler notes when)."""

    def __init__(self, wall, store, duration=0.0):
        self.wall, self.store, self.handler = wall, store, Handler(wall, duration)
        self.taken = []  # wall time each order reached this executor

    def holds_itself(self, order: AttemptOrder) -> bool:
        return True

    async def run_attempt(self, order: AttemptOrder, started: Started) -> Outcome:
        self.taken.append(self.wall() - T0)
        await hold(order)
        self.store.mark_dispatched(order.run_id, order.step.name, order.attempt, now=self.wall())
        await started("n1")
        await self.handler(order)
        return Outcome("succeeded", node="n1")

    async def recover(self, order: AttemptOrder, started: Started) -> Outcome | None:
        return None


async def test_a_run_is_started_ahead_and_its_attempt_made_at_the_due_time(store, wall, autojump_clock):
    handler = Handler(wall)
    executor = InProcessExecutor(handler)
    async with running(store, executor, wall, prepare_s=PREPARE_S) as engine:
        record, _ = await engine.apply(_every(10))
        run_id = scheduled_run_id(record.job_id, T0 + 10)
        await _until(wall, T0 + 9.75)
        run = store.run(run_id)
        assert (run.state, run.started_at) == ("running", T0 + 10)  # recorded started when due
        assert store.attempts(run_id) == [] and executor.orders == []
        await _until(wall, T0 + 10.5)
    assert handler.calls[0] == 10  # not a moment before
    (attempt,) = store.attempts(run_id)
    assert (attempt.state, attempt.created_at) == ("succeeded", T0 + 10)


async def test_an_executor_that_holds_itself_gets_the_attempt_early_and_starts_it_on_time(store, wall, autojump_clock):
    executor = HoldingExecutor(wall, store)
    async with running(store, ByKindExecutor({"command": executor}), wall, prepare_s=PREPARE_S) as engine:
        record, _ = await engine.apply(_every(10))
        run_id = scheduled_run_id(record.job_id, T0 + 10)
        await _until(wall, T0 + 9.75)
        (attempt,) = store.attempts(run_id)  # made, and pending until it is sent
        assert (attempt.state, attempt.created_at, attempt.epoch) == ("pending", T0 + 10, 1)
        assert executor.taken == [pytest.approx(9.5)] and executor.handler.calls == []
        await _until(wall, T0 + 20.5)
    assert executor.handler.calls == pytest.approx([10, 20])
    assert [a.state for a in store.attempts(run_id)] == ["succeeded"]


async def test_the_step_timeout_counts_from_the_due_time_not_from_the_preparation(store, wall, autojump_clock):
    executor = HoldingExecutor(wall, store, duration=0.8)
    async with running(store, executor, wall, prepare_s=3) as engine:
        record, _ = await engine.apply(_every(10, policies={"timeout": "1s"}))
        await _until(wall, T0 + 11)
    run = store.run(scheduled_run_id(record.job_id, T0 + 10))
    assert executor.taken == pytest.approx([7]) and executor.handler.calls == pytest.approx([10])
    assert run.state == "succeeded", run.reason


async def test_forbid_decides_at_the_due_time_whether_the_previous_run_still_runs(store, wall, autojump_clock):
    handler = Handler(wall, duration=9.9)  # each run ends 0.1 s before the next fire
    async with running(store, InProcessExecutor(handler), wall, prepare_s=PREPARE_S) as engine:
        record, _ = await engine.apply(_every(10, policies={"concurrency": "forbid"}))
        await _until(wall, T0 + 35)
    assert handler.calls == [10, 20, 30]
    assert not [r for r in store.runs(job_id=record.job_id) if r.state == "skipped"]


async def test_replace_cancels_the_previous_run_at_the_due_time_not_before(store, wall, autojump_clock):
    handler = Handler(wall, duration=10.3)
    async with running(store, InProcessExecutor(handler), wall, prepare_s=PREPARE_S) as engine:
        record, _ = await engine.apply(_every(10, policies={"concurrency": "replace"}))
        await _until(wall, T0 + 25)
    first, second = (store.run(scheduled_run_id(record.job_id, T0 + t)) for t in (10, 20))
    assert (first.state, first.finished_at) == ("cancelled", T0 + 20)
    assert first.reason == f"replaced by run {second.run_id}"
    assert handler.calls == [10, 20]


async def test_a_run_cancelled_while_prepared_never_starts(store, wall, autojump_clock):
    executor = InProcessExecutor(Handler(wall))
    async with running(store, executor, wall, prepare_s=PREPARE_S) as engine:
        record, _ = await engine.apply(_every(10))
        run_id = scheduled_run_id(record.job_id, T0 + 10)
        await _until(wall, T0 + 9.75)
        run = await engine.cancel(run_id, reason="not today")
        await _until(wall, T0 + 10.5)
    assert (run.state, run.reason) == ("cancelled", "not today")
    assert executor.orders == [] and store.attempts(run_id) == []


@pytest.mark.parametrize("holding", [False, True])
async def test_a_restart_while_a_run_is_prepared_still_starts_it_once_at_its_due_time(store, wall, autojump_clock,
                                                                                     holding):
    executor = HoldingExecutor(wall, store) if holding else InProcessExecutor(Handler(wall))
    async with running(store, executor, wall, prepare_s=PREPARE_S) as engine:
        record, _ = await engine.apply(_every(10))
        await _until(wall, T0 + 9.75)
    async with running(store, executor, wall, prepare_s=PREPARE_S):  # at once, on the same file
        await _until(wall, T0 + 12)
    run = store.run(scheduled_run_id(record.job_id, T0 + 10))
    assert executor.handler.calls == [10] and run.state == "succeeded"
    assert [a.attempt for a in store.attempts(run.run_id)] == [1]


@pytest.mark.parametrize("holding", [False, True])
async def test_a_fire_prepared_when_the_plane_stopped_follows_the_misfire_policy_after_it(store, wall, autojump_clock,
                                                                                         holding):
    executor = HoldingExecutor(wall, store) if holding else InProcessExecutor(Handler(wall))
    async with running(store, executor, wall, prepare_s=PREPARE_S) as engine:
        record, _ = await engine.apply(_every(60, policies={"misfire": "skip"}))
        run_id = scheduled_run_id(record.job_id, T0 + 60)
        await _until(wall, T0 + 59.75)
        assert store.run(run_id).state == "running"  # prepared: nothing of it sent
    await _until(wall, T0 + 100)  # down for 40 s: that fire is a misfire now
    async with running(store, executor, wall, prepare_s=PREPARE_S):
        await _until(wall, T0 + 110)
    run = store.run(run_id)
    assert run.state == "skipped" and run.reason.startswith("misfire: fired at"), run
    assert executor.handler.calls == [] and store.attempts(run_id) == []


async def test_a_run_with_an_attempt_sent_is_never_put_back_to_pending(store, wall, autojump_clock):
    async with running(store, InProcessExecutor(Handler(wall)), wall) as engine:
        await engine.apply(job())
        run_id = await engine.trigger("default", "j")
        await engine.wait_run(run_id)
    assert not store.unprepare(run_id)  # ended
    run_id = store.materialise(store.job("default", "j"), [NewRun(T0 + 5, "manual")], now=T0)[0]
    store.start_runs([(run_id, store.job("default", "j"))], now=T0 + 5)
    number = store.dispatch_attempt(run_id, "main", now=T0 + 5, epoch=1, start_step=True, sent=False)
    store.mark_dispatched(run_id, "main", number, now=T0 + 5)
    assert not store.unprepare(run_id)  # it may have left: asked about on restart, never re-run blind
    assert store.run(run_id).state == "running"
    assert [a.state for a in store.attempts(run_id)] == ["dispatched"]


async def test_a_burst_due_together_is_prepared_in_one_pass(store, wall, autojump_clock):
    executor = HoldingExecutor(wall, store)
    async with running(store, executor, wall, prepare_s=PREPARE_S) as engine:
        for i in range(20):
            await engine.apply(job(name=f"j{i}", trigger={"type": "cron", "cron": "* * * * * *"}))
        await _until(wall, T0 + 3.2)
    # every job's fire at +2 and +3 was handed over half a second early and run at its second
    calls, taken = ([round(t, 6) for t in times] for times in (executor.handler.calls, executor.taken))
    assert calls.count(2) == calls.count(3) == 20 and taken.count(2.5) == taken.count(1.5) == 20
    assert all(t == int(t) for t in calls)  # each on its second, none early


@pytest.mark.parametrize("holding", [False, True])
@pytest.mark.parametrize("how", ["suspend", "delete"])
async def test_suspending_or_deleting_a_job_treats_its_prepared_run_as_pending(store, wall, autojump_clock,
                                                                              holding, how):
    executor = HoldingExecutor(wall, store) if holding else InProcessExecutor(Handler(wall))
    async with running(store, executor, wall, prepare_s=PREPARE_S) as engine:
        record, _ = await engine.apply(_every(10))
        run_id = scheduled_run_id(record.job_id, T0 + 10)
        await _until(wall, T0 + 9.75)
        assert store.run(run_id).state == "running"
        if how == "suspend":
            await engine.set_suspended("default", "j", True)
        else:
            await engine.delete("default", "j")
        await _until(wall, T0 + 30)
    assert executor.handler.calls == []  # nothing started, then or at its due time
    if how == "suspend":  # skipped, as its pending runs are
        run = store.run(run_id)
        assert (run.state, run.reason, run.started_at) == ("skipped", "job suspended", None)
        assert store.attempts(run_id) == [] and store.steps(run_id) == []
    else:  # removed with them
        assert store.runs(job_id=record.job_id) == []


@pytest.mark.parametrize("holding", [False, True])
async def test_an_update_just_before_a_fire_takes_effect_for_that_fire(store, wall, autojump_clock, holding):
    executor = HoldingExecutor(wall, store) if holding else InProcessExecutor(Handler(wall))
    async with running(store, executor, wall, prepare_s=PREPARE_S) as engine:
        record, _ = await engine.apply(_every(10))
        await _until(wall, T0 + 9.75)
        steps = [{"name": "main", "service": "echo@stable", "command": ["echo", "v2"]}]
        _, change = await engine.apply(_every(10, steps=steps))
        assert change == "updated"
        await _until(wall, T0 + 10.5)
    run = store.run(scheduled_run_id(record.job_id, T0 + 10))
    assert run.state == "succeeded" and run.started_at == T0 + 10
    assert store.run_spec(run.run_id).steps[0].command == ("echo", "v2")
    orders = executor.handler.orders if holding else executor.orders
    assert [o.step.command for o in orders] == [("echo", "v2")]
    assert executor.handler.calls == [10]
