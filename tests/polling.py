"""Waiting for a condition in tests that involve real sockets and processes."""

import trio


async def wait_until(predicate, *, interval=0.01):
    """Poll `predicate` until it is true; the caller bounds the wait with trio.fail_after."""
    while not predicate():  # noqa: ASYNC110 - the state lives in other tasks, sockets or processes
        await trio.sleep(interval)
