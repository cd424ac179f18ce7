"""Several queued tunnel messages in one socket write, where the transport allows it.

Each frame stays one WebSocket message (the wire format is unchanged, so either side may
be older), but a relayed reply's HEAD, DATA and END queued together leave in one `send`:
one syscall and one wake-up of the peer instead of three. py-spy and strace on the plane +
node process put its socket sends first in the cost of a relayed request (nine per request
at c=1, three of them the node's reply frames).

Only trio-websocket's connection (the node's side) is batched, through its internals
(`_wsproto`, `_stream`, `_stream_lock`, as `WebSocketConnection._send` does itself); any
other transport, or a trio-websocket whose internals differ, gets None and the mux sends
message by message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto.events import BytesMessage, TextMessage

SendMany = Callable[[Sequence[bytes | str]], Awaitable[None]]
_NEEDED = ("_wsproto", "_stream", "_stream_lock", "_close_reason", "_abort_web_socket")


def batch_sender(transport: Any) -> SendMany | None:
    """A function sending several messages in one write on `transport`, or None if it cannot."""
    if not isinstance(transport, WebSocketConnection) or not all(hasattr(transport, a) for a in _NEEDED):
        return None
    ws: Any = transport

    async def send_many(messages: Sequence[bytes | str]) -> None:
        if ws._close_reason:
            raise ConnectionClosed(ws._close_reason)
        data = b"".join(ws._wsproto.send(TextMessage(data=m) if isinstance(m, str) else BytesMessage(data=m))
                        for m in messages)
        async with ws._stream_lock:
            try:
                await ws._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await ws._abort_web_socket()
                raise ConnectionClosed(ws._close_reason) from None

    return send_many


async def until_quiet(size: Callable[[], int], *, rounds: int) -> None:
    """Yield scheduling rounds while `size()` still grows, at most `rounds`; two quiet rounds end it.

    The scheduler may run a producer before the caller in a round, so one round without news
    does not yet mean the producers are done.
    """
    quiet = 0
    for _ in range(rounds):
        before = size()
        await trio.lowlevel.checkpoint()
        quiet = quiet + 1 if size() == before else 0
        if quiet == 2:
            return
