"""The leader lease on the planes' shared state, on SQLite and on a real PostgreSQL."""

import pytest
import trio

from hub_store import sql
from runtime.scheduler.leadership import SqlLease, open_leases


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.engines)])
def state(request, tmp_path):
    if request.param == "sqlite":
        found = sql.State.parse(None, default_dir=tmp_path)
    else:
        found = sql.State.parse(request.getfixturevalue("postgres_url"))
    yield found
    found.close()


@pytest.fixture
def leases(state):
    db = open_leases(state)
    yield db
    db.close()


async def test_one_holder_at_a_time_each_acquisition_a_new_epoch(leases):
    a = SqlLease(leases, "a", ttl_s=0.5, poll_s=0.05)
    b = SqlLease(leases, "b", ttl_s=0.5, poll_s=0.05)
    with trio.fail_after(10):
        first = await a.acquire()
        assert first == 1
        with trio.move_on_after(0.2) as waited:
            await b.acquire()
        assert waited.cancelled_caught  # a holds it, unexpired
        assert await a.renew(first)
        second = await b.acquire()  # a stops renewing: b gets it once it expired
        assert second == first + 1
        assert not await a.renew(first)  # a's epoch is over for good
        assert await b.renew(second)
        await b.release(second)
        third = await a.acquire()  # released: at once
        assert third == second + 1
        assert (await trio.to_thread.run_sync(a.holder_now))[:2] == ("a", third)


async def test_the_jobs_lease_is_its_own_row(leases):
    scheduler = SqlLease(leases, "a", ttl_s=5)
    jobs = SqlLease(leases, "b", name="jobs", ttl_s=5)
    with trio.fail_after(10):
        assert await scheduler.acquire() == 1
        assert await jobs.acquire() == 1


async def test_planes_racing_for_a_free_lease_get_one_winner(leases):
    holders = [SqlLease(leases, f"p{i}", ttl_s=30) for i in range(6)]
    results: list[int | None] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for lease in holders:  # each in its own thread: the database decides, not the event loop
                async def take(lease=lease):
                    results.append(await trio.to_thread.run_sync(lease._try_acquire))
                nursery.start_soon(take)
    assert sorted(results, key=lambda r: r is None) == [1] + [None] * 5
