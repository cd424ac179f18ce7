"""Leases: one holder at a time in SQLite, a new epoch per grant, and the fence on the receiving side."""

import pytest
import trio

from runtime.jobs.engine import JobEngine
from runtime.jobs.errors import StaleEpoch
from runtime.jobs.executors import InProcessExecutor
from runtime.jobs.lease import EpochFence, SoloLease, SqliteLease
from runtime.jobs.store import RunStore

from .conftest import T0, inline, job


async def test_a_second_holder_waits_for_the_lease_to_expire_and_gets_a_newer_epoch(store, wall, autojump_clock):
    a = SqliteLease(store, "plane-a", ttl_s=15, clock=wall, offload=inline)
    b = SqliteLease(store, "plane-b", ttl_s=15, clock=wall, offload=inline)
    assert await a.acquire() == 1
    start = trio.current_time()
    await trio.sleep(10)
    assert await a.renew(1)  # held until +25 now
    assert await b.acquire() == 2  # a stopped renewing: b leads once it has expired
    assert trio.current_time() - start >= 25
    assert not await a.renew(1)  # a learns it was deposed
    await b.release(2)
    assert await a.acquire() == 3  # released: at once


def test_the_fence_refuses_older_epochs():
    fence = EpochFence()
    fence.check(3)
    fence.check(3)
    with pytest.raises(StaleEpoch, match="refused a dispatch from leader epoch 2; epoch 3 is current"):
        fence.check(2)
    fence.check(4)
    assert fence.current == 4


async def test_the_engine_with_real_threads_and_clock(store):
    async def handle(order):
        return None

    engine = JobEngine(store, InProcessExecutor(handle), SoloLease())
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            assert await nursery.start(engine.run) == 1
            await engine.apply(job())
            run = await engine.wait_run(await engine.trigger("default", "j"))
            nursery.cancel_scope.cancel()
    assert run.state == "succeeded"


async def test_two_planes_on_one_file_one_fires_and_the_other_takes_over_without_duplicates(
        tmp_path, wall, autojump_clock):
    stores = [RunStore(tmp_path / "jobs.db") for _ in "ab"]
    calls = []

    async def handle(order):
        calls.append((int(wall()) - T0, order.epoch))

    executor = InProcessExecutor(handle)  # one node, fencing for both planes
    engines = [JobEngine(s, executor, SqliteLease(s, name, ttl_s=15, clock=wall, offload=inline),
                         clock=wall, offload=inline) for s, name in zip(stores, "ab", strict=True)]
    async with trio.open_nursery() as nursery:
        plane_a = trio.CancelScope()

        async def run_a():
            with plane_a:
                await engines[0].run()

        nursery.start_soon(run_a)
        await trio.sleep(1)
        nursery.start_soon(engines[1].run)  # waits: a holds the lease
        await engines[1].apply(job(trigger={"type": "interval", "every": 10}))  # any plane may apply
        await trio.sleep(34)
        plane_a.cancel()  # a stops and releases; b leads within its poll interval
        await trio.sleep(31)
        nursery.cancel_scope.cancel()
    for s in stores:
        s.close()
    assert calls == [(10, 1), (20, 1), (30, 1), (40, 2), (50, 2), (60, 2)]
