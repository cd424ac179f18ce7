"""The Redis limiter against a real redis-server: GCRA, tokens, concurrency leases, two planes at once, outages.

Each RedisLimiter stands for one plane (its own connections, its own held slots); times are
Redis's and real, so the rates here are high enough for the tests to take a few seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from runtime.dispatch.limits import Limits, Principal
from runtime.dispatch.redis_limits import RedisLimiter
from runtime.dispatch.resp import RespClient
from runtime.gateway.errors import GatewayError
from tests.engines.redis import RedisServer, redis_binary
from tests.polling import wait_until

pytestmark = pytest.mark.engines
ROOT = Path(__file__).resolve().parents[3]


@asynccontextmanager
async def plane_limiter(url, **options):
    """A RedisLimiter with its background task running, as a plane runs it."""
    limiter = RedisLimiter(url, **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(limiter.run)
        yield limiter
        nursery.cancel_scope.cancel()


def who(key="k1", tenant="t", key_limits=None, tenant_limits=None):
    return Principal(tenant, key, key_limits=key_limits or Limits(), tenant_limits=tenant_limits or Limits())


async def admitted(limiter, p):
    try:
        await limiter.check(p)
    except GatewayError as exc:
        assert exc.status == 429, exc.message
        return False
    return True


async def test_gcra_allows_the_burst_then_the_steady_rate(redis_url):
    with trio.fail_after(20):
        async with plane_limiter(redis_url) as limiter:
            slow = who(key="slow", key_limits=Limits(rpm=60))  # burst 6, then one a second
            assert [await admitted(limiter, slow) for _ in range(7)] == [True] * 6 + [False]
            with pytest.raises(GatewayError) as refused:
                await limiter.check(slow)
            assert refused.value.code == "rate_limit_exceeded" and 0 < refused.value.retry_after <= 1.0
            assert "60 requests/min" in refused.value.message and (b"retry-after", b"1") in refused.value.headers()

            p = who(key_limits=Limits(rpm=600))  # burst 60, then one every 100 ms
            burst, began = 0, trio.current_time()
            while await admitted(limiter, p):
                burst += 1
            assert 60 <= burst <= 60 + (trio.current_time() - began) * 10 + 1  # the burst, plus what accrued
            # Asked as fast as one client can for 2 s: the limit lets 10/s through.
            began, count = trio.current_time(), 0
            while trio.current_time() - began < 2.0:
                count += await admitted(limiter, p)
            elapsed = trio.current_time() - began
            assert abs(count - elapsed * 10) <= 2, (count, elapsed)


async def test_two_planes_at_once_never_admit_past_the_burst(redis_url):
    # Both "planes" fire at the same instant: the script orders them, the total is the burst.
    p = who(key_limits=Limits(rpm=600), tenant_limits=Limits(rpm=6000))
    results = []
    with trio.fail_after(20):
        async with plane_limiter(redis_url) as a, plane_limiter(redis_url) as b:
            began = trio.current_time()

            async def one(limiter):
                results.append(await admitted(limiter, p))

            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(one, (a, b)[i % 2])
            elapsed = trio.current_time() - began
    assert len(results) == 200
    assert 60 <= sum(results) <= 60 + int(elapsed * 10) + 1, (sum(results), elapsed)


async def test_a_refusal_by_one_subject_counts_nothing_for_the_other(redis_url):
    # The tenant refuses: the key's rate must not have been spent (check all, then write).
    p = who(key_limits=Limits(rpm=6000), tenant_limits=Limits(rpm=60))  # tenant burst 6
    other_key = who(key="k2", key_limits=Limits(rpm=6000), tenant_limits=Limits(rpm=60))
    with trio.fail_after(20):
        async with plane_limiter(redis_url) as limiter:
            assert [await admitted(limiter, p) for _ in range(8)] == [True] * 6 + [False] * 2
            with pytest.raises(GatewayError, match="of this tenant"):
                await limiter.check(other_key)
            client = RespClient(redis_url)
            tat = float(await client.execute("GET", "flowctl:limits:{t}:r:key:k1"))
            now_s, now_us = await client.execute("TIME")
            # Six requests of the key at 10 ms each, not eight: the refused two left no trace.
            assert tat - (int(now_s) * 1000 + int(now_us) / 1000) <= 6 * 10 + 1
            await client.aclose()


async def test_tokens_per_minute_are_charged_after_the_fact_across_planes(redis_url):
    p = who(key_limits=Limits(tpm=600))
    with trio.fail_after(20):
        async with plane_limiter(redis_url) as a, plane_limiter(redis_url) as b:
            await a.check(p)
            a.charge(p, 900)  # a reply larger than the budget: the next request waits, on any plane
            await wait_until(lambda: not a._charges)
            with pytest.raises(GatewayError) as refused:
                await b.check(p)
            assert refused.value.code == "tokens_limit_exceeded" and 29 <= refused.value.retry_after <= 31
            assert "600 tokens/min" in refused.value.message


async def test_a_charge_rides_on_the_next_check_of_the_same_plane(redis_url):
    p = who(key_limits=Limits(tpm=60))
    with trio.fail_after(20):
        async with plane_limiter(redis_url) as limiter:
            await limiter.check(p)
            limiter.charge(p, 120)
            with pytest.raises(GatewayError, match="token rate limit"):
                await limiter.check(p)  # at once: the charge went first in the same round trip


async def test_concurrency_per_key_and_per_tenant_across_planes(redis_url):
    a_key = who(key="a", key_limits=Limits(max_concurrency=2), tenant_limits=Limits(max_concurrency=3))
    b_key = who(key="b", tenant_limits=Limits(max_concurrency=3))
    with trio.fail_after(20):
        async with plane_limiter(redis_url) as one, plane_limiter(redis_url) as two:
            first = await one.take_slot(a_key)
            await two.take_slot(a_key)
            with pytest.raises(GatewayError, match="this key") as refused:
                await one.take_slot(a_key)
            assert refused.value.code == "concurrency_limit_exceeded"
            await one.take_slot(b_key)
            with pytest.raises(GatewayError, match="this tenant"):
                await two.take_slot(b_key)
            one.give_slot(a_key, first)  # written by the first plane's flush: the other sees it soon after
            while True:
                try:
                    await two.take_slot(b_key)
                    break
                except GatewayError:
                    await trio.sleep(0.01)


async def test_a_released_slot_is_free_for_the_next_request_at_once(redis_url):
    p = who(key_limits=Limits(max_concurrency=1))
    with trio.fail_after(20):
        async with plane_limiter(redis_url) as limiter:
            for _ in range(50):  # one request after another, as a client with one connection sends them
                slot = await limiter.take_slot(p)
                limiter.give_slot(p, slot)


FULL = Limits(rpm=10**6, tpm=10**9, max_concurrency=100)  # every kind of limit, none of them reached


async def test_a_fully_limited_request_costs_one_round_trip(redis_url):
    # Counted as bench/_scale_limits.py counts them: the slot and both rates in one script call,
    # the previous request's release and charge riding on it.
    p = who(key_limits=FULL, tenant_limits=FULL)
    with trio.fail_after(20):
        async with plane_limiter(redis_url) as limiter:
            limiter.give_slot(p, await limiter.admit_slot(p))  # warm-up: connection open, scripts loaded
            limiter.round_trips = 0
            for _ in range(50):
                slot = await limiter.admit_slot(p)
                limiter.charge(p, 50)
                limiter.give_slot(p, slot)
            assert limiter.round_trips == 50


async def test_a_refusal_by_rate_leaves_no_slot_taken(redis_url):
    # One slot, burst 6: the 7th request is refused by its rate. Had it kept the slot even for a
    # moment, another plane's request that needs only that slot would see the key full.
    p = who(key_limits=Limits(rpm=60, max_concurrency=1))
    with trio.fail_after(20):
        async with plane_limiter(redis_url) as one, plane_limiter(redis_url) as two:
            for _ in range(6):
                one.give_slot(p, await one.admit_slot(p))
            with pytest.raises(GatewayError) as refused:
                await one.admit_slot(p)
            assert refused.value.code == "rate_limit_exceeded" and "60 requests/min" in refused.value.message
            client = RespClient(redis_url)
            assert await client.execute("ZCARD", "flowctl:limits:{t}:c:key:k1") == 0
            await client.aclose()
            assert not one._held and not one._releases  # nothing to give back: nothing was taken
            slot = await two.take_slot(p)  # the slot alone: free
            with pytest.raises(GatewayError) as full:
                await one.admit_slot(p)  # and now the slot refuses first, the rate untouched
            assert full.value.code == "concurrency_limit_exceeded"
            two.give_slot(p, slot)


async def test_slots_and_rates_taken_together_stay_exact_across_planes(redis_url):
    narrow = who(key="narrow", key_limits=Limits(rpm=60000, max_concurrency=3))
    fast = who(key="fast", key_limits=Limits(rpm=600, max_concurrency=1000))  # burst 60, then 10/s
    with trio.fail_after(30):
        async with plane_limiter(redis_url) as a, plane_limiter(redis_url) as b:
            held: list[tuple[RedisLimiter, object]] = []
            codes: list[str] = []

            async def hold(limiter):  # all at once, none given back: exactly the 3 slots are taken
                try:
                    held.append((limiter, await limiter.admit_slot(narrow)))
                except GatewayError as exc:
                    codes.append(exc.code)

            async with trio.open_nursery() as nursery:
                for i in range(40):
                    nursery.start_soon(hold, (a, b)[i % 2])
            assert len(held) == 3 and codes == ["concurrency_limit_exceeded"] * 37
            for limiter, slot in held:
                limiter.give_slot(narrow, slot)

            results: list[bool] = []
            began = trio.current_time()

            async def one(limiter):
                try:
                    limiter.give_slot(fast, await limiter.admit_slot(fast))
                    results.append(True)
                except GatewayError as exc:
                    assert exc.code == "rate_limit_exceeded", exc.message
                    results.append(False)

            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(one, (a, b)[i % 2])
            elapsed = trio.current_time() - began
            assert 60 <= sum(results) <= 60 + int(elapsed * 10) + 1, (sum(results), elapsed)


async def test_unlimited_keys_cost_no_redis_call(redis_url):
    with trio.fail_after(20):
        async with plane_limiter(redis_url) as limiter:
            p = who()
            slot = await limiter.take_slot(p)
            await limiter.check(p)
            limiter.charge(p, 100)
            limiter.give_slot(p, slot)
            limiter.give_slot(p, await limiter.admit_slot(p))
            assert limiter.round_trips == 0


HOLDER = textwrap.dedent("""
    import sys, trio
    from runtime.dispatch.limits import Limits, Principal
    from runtime.dispatch.redis_limits import RedisLimiter

    async def main():
        limiter = RedisLimiter(sys.argv[1], slot_lease=1.5)
        async with trio.open_nursery() as nursery:
            await nursery.start(limiter.run)
            await limiter.take_slot(Principal("t", "k", key_limits=Limits(max_concurrency=1)))
            print("held", flush=True)
            await trio.sleep_forever()

    trio.run(main)
""")


async def test_a_dead_planes_slot_is_reclaimed_after_its_lease(redis_url):
    p = who(key="k", key_limits=Limits(max_concurrency=1))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = await trio.lowlevel.open_process([sys.executable, "-c", HOLDER, redis_url], stdout=subprocess.PIPE,
                                              env=env, stdin=subprocess.DEVNULL)
    try:
        with trio.fail_after(30):
            said = b""
            while not said.endswith(b"\n"):
                chunk = await holder.stdout.receive_some()
                assert chunk, "the holder exited"
                said += chunk
            assert said.strip() == b"held"
            async with plane_limiter(redis_url) as limiter:
                # Held for two leases: the living holder renews it (every 0.5 s).
                began = trio.current_time()
                while trio.current_time() - began < 3.0:
                    with pytest.raises(GatewayError, match="concurrent"):
                        await limiter.take_slot(p)
                    await trio.sleep(0.25)
                holder.kill()  # SIGKILL: nothing released, nothing renewed
                await holder.wait()
                killed = trio.current_time()
                while True:
                    try:
                        await limiter.take_slot(p)
                        break
                    except GatewayError:
                        await trio.sleep(0.05)
                assert trio.current_time() - killed <= 1.5 + 1.0  # the lease, and slack for a loaded box
    finally:
        holder.kill()
        with trio.CancelScope(shield=True):
            await holder.wait()
            await holder.stdout.aclose()


async def test_redis_down_fails_closed_with_503_and_recovers(redis_server):
    p = who(key_limits=Limits(rpm=6000, max_concurrency=5))
    with trio.fail_after(30):
        async with plane_limiter(redis_server.url, timeout=0.5) as limiter:
            await limiter.check(p)
            running = await limiter.admit_slot(p)  # a request in flight when Redis goes away
            redis_server.stop()
            for attempt in (limiter.admit_slot, limiter.check, limiter.take_slot):
                with pytest.raises(GatewayError) as refused:
                    await attempt(p)
                assert refused.value.status == 503 and refused.value.code == "limiter_unavailable"
                assert "Redis at 127.0.0.1" in refused.value.message and "\n" not in refused.value.message
                assert (b"retry-after", b"1") in refused.value.headers()
            limiter.give_slot(p, running)  # its end: the release cannot be written (the lease ends it)
            await trio.to_thread.run_sync(redis_server.start)  # empty: the scripts are loaded again

            async def works():
                try:
                    limiter.give_slot(p, await limiter.admit_slot(p))
                    await limiter.check(p)
                    await limiter.take_slot(p)
                    return True
                except GatewayError as exc:
                    assert exc.status == 503
                    return False

            while not await works():  # noqa: ASYNC110 - the limiter refuses fast for DOWN_RETRY
                await trio.sleep(0.05)


def test_a_bad_url_is_refused_in_one_line():
    with pytest.raises(ValueError, match="redis:// or rediss://"):
        RedisLimiter("http://127.0.0.1:6379")
    with pytest.raises(ValueError, match=r"\*\*\*") as refused:
        RedisLimiter("redis://u:s3cret@127.0.0.1:x/0")
    assert "s3cret" not in str(refused.value)


async def test_a_password_and_database_from_the_url_and_a_wrong_password_never_shown(tmp_path):
    server = RedisServer(redis_binary(), tmp_path, args=("--requirepass", "s3cret-pw"))
    await trio.to_thread.run_sync(server.start)
    try:
        p = who(key_limits=Limits(rpm=60))
        with trio.fail_after(20):
            async with plane_limiter(f"redis://:s3cret-pw@127.0.0.1:{server.port}/3") as limiter:
                await limiter.check(p)
            client = RespClient(f"redis://:s3cret-pw@127.0.0.1:{server.port}/3")
            assert await client.execute("DBSIZE") == 1  # the GCRA key, in database 3
            await client.aclose()
            async with plane_limiter(f"redis://:wrong-pw@127.0.0.1:{server.port}/3") as limiter:
                with pytest.raises(GatewayError) as refused:
                    await limiter.check(p)
        assert refused.value.status == 503 and "refused AUTH" in refused.value.message
        assert "wrong-pw" not in refused.value.message and "s3cret" not in refused.value.message
    finally:
        await trio.to_thread.run_sync(server.stop)


async def test_a_stopping_plane_gives_back_the_slots_of_requests_cancelled_with_it(redis_url):
    p = who(key_limits=Limits(max_concurrency=1))
    limiter = RedisLimiter(redis_url)  # a 30 s lease: only the release frees the slot within the test
    with trio.fail_after(20):
        async with trio.open_nursery() as plane:
            await plane.start(limiter.run)

            async def request(task_status=trio.TASK_STATUS_IGNORED):
                slot = await limiter.take_slot(p)
                try:
                    task_status.started()
                    await trio.sleep_forever()
                finally:
                    limiter.give_slot(p, slot)

            await plane.start(request)
            plane.cancel_scope.cancel()  # the plane stops, its requests with it
        async with plane_limiter(redis_url) as other:
            await other.take_slot(p)  # free at once
