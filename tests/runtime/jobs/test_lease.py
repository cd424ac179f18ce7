"""Leases: one holder at a time in SQLite, a new epoch per grant, and the fence on the receiving side."""

import sqlite3

import pytest
import trio

from runtime.exception_groups import leaves
from runtime.jobs.engine import JobEngine
from runtime.jobs.errors import LeaseLost, StaleEpoch
from runtime.jobs.executors import InProcessExecutor
from runtime.jobs.lease import EpochFence, SoloLease, SqliteLease
from runtime.jobs.store import RunStore

from .conftest import T0, inline, job, running


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


class FlakyLease(SoloLease):
    """A lease whose store stops answering (renew and release raise) while `away` is set."""

    def __init__(self, *, ttl_s):
        super().__init__(ttl_s=ttl_s)
        self.away = False

    async def renew(self, epoch):
        if self.away:
            raise sqlite3.OperationalError("the state database did not answer")
        return await super().renew(epoch)

    async def release(self, epoch):
        if self.away:
            raise sqlite3.OperationalError("the state database did not answer")
        await super().release(epoch)


async def test_the_engine_leads_on_through_a_store_outage_shorter_than_its_lease(store, wall, autojump_clock):
    lease = FlakyLease(ttl_s=15)
    rec_calls = []

    async def handle(order):
        rec_calls.append(order.run_id)

    async with running(store, InProcessExecutor(handle), wall, lease=lease) as engine:
        await engine.apply(job())
        await trio.sleep(10)  # renewed at least once
        lease.away = True
        await trio.sleep(9)  # less than the TTL since the last renewal
        lease.away = False
        await trio.sleep(30)  # renewals succeed again: still leading, still firing
        run = await engine.wait_run(await engine.trigger("default", "j"))
    assert run.state == "succeeded" and rec_calls == [run.run_id]  # and the block ended without LeaseLost


async def _never_called(order):
    raise AssertionError(f"no run was triggered, yet {order.run_id} ran")


async def test_a_store_away_past_the_lease_ends_leading_with_lease_lost_not_the_store_error(store, wall, autojump_clock):
    lease = FlakyLease(ttl_s=15)
    with pytest.raises(BaseExceptionGroup) as info:
        async with running(store, InProcessExecutor(_never_called), wall, lease=lease):
            lease.away = True  # and release() fails too, on the way out
            await trio.sleep(60)
    (error,) = leaves(info.value)
    assert isinstance(error, LeaseLost)
    assert "ran out while the store was away" in str(error) and "did not answer" in str(error)
