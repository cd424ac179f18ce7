"""Limits under trio's autojump clock: GCRA is smooth, tokens/minute is charged after the fact, concurrency."""

import pytest
import trio

from runtime.dispatch.limits import Limiter, Limits, Principal
from runtime.gateway.errors import GatewayError


def who(**key):
    return Principal("t", "k1", key_limits=Limits(**key))


async def test_gcra_allows_a_burst_then_one_per_interval(autojump_clock):
    limiter, p = Limiter(), who(rpm=60)  # burst 6, then one a second
    for _ in range(6):
        limiter.admit(p)
    with pytest.raises(GatewayError) as refused:
        limiter.admit(p)
    assert refused.value.status == 429 and 0 < refused.value.retry_after <= 1.0
    assert (b"retry-after", b"1") in refused.value.headers()
    await trio.sleep(1.0)
    limiter.admit(p)


async def test_gcra_at_ten_times_the_rate_accepts_the_limit(autojump_clock):
    limiter, p = Limiter(), who(rpm=600)
    accepted = 0
    began = trio.current_time()
    while trio.current_time() - began < 60:  # offered: 100 requests/s, 10x the limit
        try:
            limiter.admit(p)
            accepted += 1
        except GatewayError:
            pass
        await trio.sleep(0.01)
    assert 600 <= accepted <= 600 + 60 + 1  # the limit plus the initial burst


async def test_tokens_per_minute_are_charged_after_the_fact(autojump_clock):
    limiter, p = Limiter(), who(tpm=600)
    limiter.admit(p)
    limiter.charge(p, 900)  # a reply larger than the budget: the next one waits
    with pytest.raises(GatewayError) as refused:
        limiter.admit(p)
    assert refused.value.code == "tokens_limit_exceeded" and 30 <= refused.value.retry_after <= 31
    await trio.sleep(31)
    limiter.admit(p)


async def test_concurrency_per_key_and_per_tenant():
    limiter = Limiter()
    a = Principal("t", "a", key_limits=Limits(max_concurrency=2), tenant_limits=Limits(max_concurrency=3))
    b = Principal("t", "b", tenant_limits=Limits(max_concurrency=3))
    limiter.enter(a)
    limiter.enter(a)
    with pytest.raises(GatewayError, match="this key"):
        limiter.enter(a)
    limiter.enter(b)
    with pytest.raises(GatewayError, match="this tenant"):
        limiter.enter(b)
    limiter.release(a)
    limiter.enter(b)


async def test_a_slot_is_not_a_request_against_the_rates():
    # The gateway takes the slot before the body; only a request that gets to `admit` counts for rpm.
    limiter = Limiter()
    p = Principal("t", "k", key_limits=Limits(rpm=1, max_concurrency=5))
    for _ in range(3):
        limiter.enter(p)
    assert limiter.active == {"key:k": 3, "tenant:t": 3}
    limiter.admit(p)
    with pytest.raises(GatewayError, match="request rate"):
        limiter.admit(p)


async def test_a_refused_request_is_not_counted():
    limiter = Limiter()
    p = Principal("t", "k", key_limits=Limits(rpm=1), tenant_limits=Limits(max_concurrency=2))
    limiter.enter(p)
    limiter.admit(p)
    limiter.enter(p)
    with pytest.raises(GatewayError, match="request rate"):
        limiter.admit(p)
    limiter.release(p)  # what the gateway does for a request refused after taking its slot
    assert limiter.active == {"key:k": 1, "tenant:t": 1}
    limiter.enter(p)
    with pytest.raises(GatewayError, match="concurrent"):
        limiter.enter(p)
    assert limiter.active == {"key:k": 2, "tenant:t": 2}


async def test_a_slot_and_the_rates_at_once_take_nothing_when_refused():
    # admit_slot: the slot is given back before anyone can see it when a rate refuses.
    limiter = Limiter()
    p = Principal("t", "k", key_limits=Limits(rpm=1, max_concurrency=1))
    assert await limiter.admit_slot(p) is None
    assert limiter.active == {"key:k": 1, "tenant:t": 1}
    with pytest.raises(GatewayError, match="concurrent"):  # the slot refuses first
        await limiter.admit_slot(p)
    limiter.give_slot(p, None)
    with pytest.raises(GatewayError, match="request rate"):
        await limiter.admit_slot(p)
    assert limiter.active == {}
    await limiter.take_slot(p)  # the slot alone is free
