"""Leases: one holder at a time in SQLite, a new epoch per grant, and the fence on the receiving side."""

import pytest
import trio

from runtime.jobs.engine import JobEngine
from runtime.jobs.errors import StaleEpoch
from runtime.jobs.executors import InProcessExecutor
from runtime.jobs.lease import EpochFence, SoloLease, SqliteLease

from .conftest import inline, job


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
