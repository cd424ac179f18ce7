"""Gathering fast chunks into one write, never holding a slow one (on Trio's autojump clock)."""

import pytest
import trio

from runtime.tunnel.coalesce import HOLD, Pacer, gather


def source(chunks, gap):
    """A receive_some that hands out `chunks` `gap` seconds apart, then b"" (the end)."""
    pending = list(chunks)

    async def receive_some():
        if not pending:
            return b""
        await trio.sleep(gap)
        return pending.pop(0)

    return receive_some


async def test_chunks_within_the_hold_are_gathered_and_the_end_stops_gathering(autojump_clock):
    receive_some = source([b"b", b"c", b"d"], HOLD / 10)
    began = trio.current_time()
    assert await gather(receive_some, b"a") == b"abcd"
    assert trio.current_time() - began < HOLD  # the end came first: no wait for the deadline
    assert await receive_some() == b""


async def test_gathering_stops_at_the_hold_and_at_the_size_limit(autojump_clock):
    receive_some = source([b"x"] * 100, HOLD / 4)
    began = trio.current_time()
    first = await gather(receive_some, b"x")
    assert trio.current_time() - began == pytest.approx(HOLD) and 3 <= len(first) <= 5
    assert await gather(source([b"yy"] * 100, 0), b"yy", limit=10) == b"y" * 10


async def test_the_pacer_gathers_only_what_follows_a_write_closely(autojump_clock):
    pacer = Pacer()
    assert not pacer.fast()  # the first chunk of a stream goes out at once
    pacer.wrote()
    await trio.sleep(HOLD / 2)
    assert pacer.fast()
    await trio.sleep(HOLD)
    assert not pacer.fast()  # an LLM's next token, tens of ms later, is not held
