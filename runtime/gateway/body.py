"""Reading a request body on the gateway's bare ASGI paths: capped, and under one deadline.

quart gives its routes BODY_TIMEOUT; the gateway's /v1 routes and its admin API are plain
ASGI, so without this a client that sends its headers and then a byte every few seconds
holds a connection (and, before admission moved ahead of the body, no slot) forever.
"""

from __future__ import annotations

from typing import Any

import trio

from runtime.gateway.errors import GatewayError

DEFAULT_BODY_TIMEOUT = 60.0  # a whole 4 MiB upload at 70 KB/s


def refuse_declared_length(headers: dict[bytes, bytes], limit: int) -> None:
    """413 at once when ``Content-Length`` announces more than `limit` bytes (nothing is read)."""
    declared = headers.get(b"content-length")
    # h11 has checked the value: ASCII digits, at most 20 of them.
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)


async def read_body(receive: Any, *, limit: int, body_timeout: float = DEFAULT_BODY_TIMEOUT) -> bytes:
    """The whole request body, of at most `limit` bytes, within `body_timeout` seconds.

    Error handling: a longer body is a 413 as soon as it passes `limit` (the rest is not
    read: the reply then closes the connection), a body still incomplete after
    `body_timeout` seconds a 408, and a client that went away `trio.BrokenResourceError`.
    """
    chunks: list[bytes] = []
    size = 0
    try:
        with trio.fail_after(body_timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise trio.BrokenResourceError("the client went away")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except trio.TooSlowError:
        raise GatewayError(408, f"the request body did not arrive within {body_timeout:g} s",
                           "request_timeout") from None


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"the request body is larger than {limit} bytes", "request_too_large")
