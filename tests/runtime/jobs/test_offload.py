"""Store calls batched per worker-thread trip, committed together, each still all-or-nothing."""

import threading
from contextlib import contextmanager

import pytest
import trio

from runtime.jobs.errors import IllegalTransition
from runtime.jobs.offload import BatchedOffload, run_inline
from runtime.jobs.records import NewRun
from runtime.jobs.store import RunStore

from .conftest import T0, job


async def test_calls_queued_during_a_trip_share_the_next_one(store):
    trips = []

    @contextmanager
    def counted():
        trips.append(1)
        with store.group():
            yield

    offload = BatchedOffload(counted)
    threads: list[int] = []
    gate = threading.Event()

    def first():
        gate.wait(10)  # holds the first trip until the others are queued
        threads.append(threading.get_ident())
        return "first"

    def later(i):
        threads.append(threading.get_ident())
        return i

    results = {}
    async with trio.open_nursery() as nursery:
        async def call(key, fn):
            results[key] = await offload(fn)

        nursery.start_soon(call, "first", first)
        await trio.sleep(0.05)
        for i in range(5):
            nursery.start_soon(call, i, lambda i=i: later(i))
        await trio.sleep(0.05)
        gate.set()
    assert results == {"first": "first", 0: 0, 1: 1, 2: 2, 3: 3, 4: 4}
    assert len(trips) == 2  # the first call's, then the five queued meanwhile together
    assert threading.get_ident() not in threads  # off the event loop


async def test_a_failing_call_is_rolled_back_alone_and_raised_to_its_caller(store, tmp_path):
    record, _ = store.put_job(job(), now=T0)
    (run_id,) = store.materialise(record, [NewRun(T0, "manual")], now=T0)
    offload = BatchedOffload(store.group)
    outcomes = {}

    async def call(key, fn):
        try:
            outcomes[key] = await offload(fn)
        except IllegalTransition as e:
            outcomes[key] = e

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, "start", lambda: store.start_runs([(run_id, record)], now=T0))
        # In the same trip: an illegal move (running -> pending is not one) after a partial write.
        nursery.start_soon(call, "bad", lambda: store.set_run_state(run_id, "pending", now=T0))
        nursery.start_soon(call, "more", lambda: store.materialise(record, [NewRun(T0 + 1, "manual")], now=T0))
    assert outcomes["start"] == [run_id]
    assert isinstance(outcomes["bad"], IllegalTransition)
    assert len(outcomes["more"]) == 1
    other = RunStore(store.state or tmp_path / "jobs.db")  # another connection sees what the group committed
    try:
        assert other.run(run_id).state == "running"
        assert len(other.runs()) == 2
    finally:
        other.close()


def test_a_group_is_one_transaction(store, tmp_path):
    record, _ = store.put_job(job(), now=T0)
    peek = RunStore(store.state or tmp_path / "jobs.db")  # another connection
    try:
        with store.group():
            store.materialise(record, [NewRun(T0, "manual")], now=T0)
            assert peek.runs() == []  # not visible before the group commits
        assert len(peek.runs()) == 1
    finally:
        peek.close()


async def test_inline_runs_nothing_once_cancelled():
    calls = []
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await run_inline(lambda: calls.append(1))
    assert calls == []
    assert await run_inline(lambda: 42) == 42


async def test_inline_batches_every_call_of_a_scheduling_round_in_one_commit_on_the_loop(store):
    record, _ = store.put_job(job(), now=T0)
    trips, threads = [], set()

    @contextmanager
    def counted():
        trips.append(1)
        with store.group():
            yield

    offload = BatchedOffload(counted, inline=True)

    def make(i):
        threads.add(threading.get_ident())
        return store.materialise(record, [NewRun(T0 + i, "manual")], now=T0)

    results = {}
    async with trio.open_nursery() as nursery:
        for i in range(50):  # a cron burst: 50 runs' calls made in the same round
            nursery.start_soon(lambda i=i: _put(results, i, offload(lambda: make(i))))
    assert sorted(results) == list(range(50)) and all(len(r) == 1 for r in results.values())
    assert len(trips) <= 2 and threads == {threading.get_ident()}  # one or two commits, never a thread hop
    assert len(store.runs()) == 50
    with trio.CancelScope() as scope:  # cancelled before it is queued: never runs
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await offload(lambda: make(99))
    assert len(store.runs()) == 50


async def _put(results, key, awaitable):
    results[key] = await awaitable


async def test_inline_trips_are_bounded_so_a_huge_burst_lets_other_tasks_in_between(store):
    trips, between = [], []

    @contextmanager
    def counted():
        trips.append(1)
        with store.group():
            yield

    offload = BatchedOffload(counted, inline=True, max_batch=10)

    async def other_task():
        while len(trips) < 5:
            between.append(len(trips))
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_task)
        for _ in range(50):
            nursery.start_soon(offload, lambda: None)
    assert len(trips) == 5 and len(set(between)) > 2  # the loop ran other work between the trips
