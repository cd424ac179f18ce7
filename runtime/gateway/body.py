"""Reading a request body on the gateway's bare ASGI paths: capped, and under one deadline.

quart gives its routes BODY_TIMEOUT; the gateway's /v1 routes and its admin API are plain
ASGI, so without this a client that sends its headers and then a byte every few seconds
holds a connection (and, before admission moved ahead of the body, no slot) forever.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio

from runtime.gateway.errors import GatewayError

DEFAULT_BODY_TIMEOUT = 60.0  # a whole 4 MiB upload at 70 KB/s
# How long the gateway waits for a body to be whole before it takes the request's slot without
# it: a body sent with its headers is there at once; a slow upload holds no slot this long.
ARRIVED_WAIT = 0.01


def refuse_declared_length(headers: dict[bytes, bytes], limit: int) -> None:
    """413 at once when ``Content-Length`` announces more than `limit` bytes (nothing is read)."""
    declared = headers.get(b"content-length")
    # h11 has checked the value: ASCII digits, at most 20 of them.
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)


async def read_arrived(receive: Any, *, limit: int, wait: float = ARRIVED_WAIT) -> tuple[list[bytes], bool]:
    """The parts of the body there already (or within `wait` seconds), and whether that is all of it.

    A body sent with its headers is whole here, and its request is admitted in one step; the
    rest of one still arriving is read with `read_body(..., start=parts)`, holding a slot.
    Error handling: as `read_body` (413, `trio.BrokenResourceError`).
    """
    parts: list[bytes] = []
    with trio.move_on_after(wait):
        while True:  # a message is taken whole or not at all: the channel's receive is cancel-safe
            if await _receive_part(receive, parts, limit):
                return parts, True
    return parts, False


async def read_body(receive: Any, *, limit: int, body_timeout: float = DEFAULT_BODY_TIMEOUT,
                    start: Sequence[bytes] = ()) -> bytes:
    """The whole request body, of at most `limit` bytes, within `body_timeout` seconds (after the
    parts `start` that `read_arrived` took).

    Error handling: a longer body is a 413 as soon as it passes `limit` (the rest is not
    read: the reply then closes the connection), a body still incomplete after
    `body_timeout` seconds a 408, and a client that went away `trio.BrokenResourceError`.
    """
    parts = list(start)
    try:
        with trio.fail_after(body_timeout):
            while not await _receive_part(receive, parts, limit):
                pass
    except trio.TooSlowError:
        raise GatewayError(408, f"the request body did not arrive within {body_timeout:g} s",
                           "request_timeout") from None
    return b"".join(parts)


async def _receive_part(receive: Any, parts: list[bytes], limit: int) -> bool:
    """Append the next part of the body to `parts`; whether it was the last."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise trio.BrokenResourceError("the client went away")
    chunk = message.get("body", b"")
    if sum(map(len, parts)) + len(chunk) > limit:
        raise _too_large(limit)
    parts.append(chunk)
    return not message.get("more_body", False)


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"the request body is larger than {limit} bytes", "request_too_large")
