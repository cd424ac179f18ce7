"""The ASGI wrapper `serve_app` puts in front of every app: limits and guarantees no route can forget.

Per request it enforces the real header cap (431), refuses a request carrying two
``Authorization`` headers (400: routes would disagree on which one counts), finishes the
last send of a response under a bounded shield, and makes an early reply safe on a
keep-alive connection: a reply that starts before the request's body has arrived first lets
a small rest of the body arrive (so the client finishes its upload and may reuse the
connection), and otherwise carries ``Connection: close`` (hypercorn closes such a
connection after the reply anyway; the header tells the client not to reuse it).
Across requests it counts what is in flight so `drain` knows when nothing is left.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import trio

CLOSE_GOING_AWAY = 1001
# An early reply waits this long at most for the rest of a body of up to this many bytes.
DEFAULT_UNREAD_BODY_TIMEOUT = 1.0
DEFAULT_UNREAD_BODY_LIMIT = 1 << 20
# After an early reply, the rest of the body is read and dropped until hypercorn reports the
# request over (milliseconds after the app returns); this only bounds a case that never ends.
DRAIN_AFTER_REPLY_TIMEOUT = 10.0
_CLOSE = (b"connection", b"close")


class Guard:
    """ASGI wrapper: header cap, duplicate credentials, early replies, shielded finish, the drain.

    h11's `max_incomplete_event_size` only limits a request still arriving: a 20 KiB
    header block that lands in one read passes it. So the size of the request line and
    headers is checked here too.

    quart-trio cancels its request task as soon as hypercorn reports the stream closed,
    which hypercorn does from inside the app's last ``send``; that cancel also kills the
    keep-alive idle timer hypercorn starts there, and the connection then idles forever.
    Finishing the last send under a (bounded) shield lets the timer start.

    It also counts the HTTP requests and WebSockets in the app, so `drain` knows when
    nothing is left, and can close the WebSockets (hypercorn leaves them open).
    """

    def __init__(self, app: Any, *, max_header_bytes: int, finish_timeout: float,
                 unread_body_timeout: float = DEFAULT_UNREAD_BODY_TIMEOUT,
                 unread_body_limit: int = DEFAULT_UNREAD_BODY_LIMIT) -> None:
        self._app = app
        self._max_header_bytes = max_header_bytes
        self._finish_timeout = finish_timeout
        self._unread_body_timeout = unread_body_timeout
        self._unread_body_limit = unread_body_limit
        self._requests = 0
        self._websockets: set[trio.CancelScope] = set()
        self._closing_websockets = False
        self._changed = trio.Event()
        # Where the drains after early replies run (serve_app's nursery; see _drain_after_reply).
        self.drainers: trio.Nursery | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        target = scope.get("raw_path") or scope["path"].encode()
        size = len(target) + sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        if size > self._max_header_bytes:
            await _refuse(scope, send, 431)
            return
        if sum(1 for name, _ in scope["headers"] if name.lower() == b"authorization") > 1:
            await _refuse(scope, send, 400, "the request has more than one Authorization header: send one")
            return
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        body = _RequestBody(receive, scope["headers"])
        self._requests += 1
        try:
            await self._app(scope, body.receive, partial(self._send, scope, body, send))
        finally:
            self._requests -= 1
            self._notify()
            if body.pending and self.drainers is not None:
                self.drainers.start_soon(_drain_after_reply, body)

    async def drain(self) -> None:
        """Wait for the HTTP requests in flight, then close every WebSocket with 1001 and wait for them."""
        while self._requests:
            await self._wait_for_change()
        # Only now: a WebSocket (the node tunnel) may be carrying those requests.
        self._closing_websockets = True
        for scope in self._websockets:
            scope.cancel()
        while self._websockets or self._requests:
            await self._wait_for_change()

    async def _wait_for_change(self) -> None:
        await self._changed.wait()
        self._changed = trio.Event()

    def _notify(self) -> None:
        self._changed.set()

    async def _websocket(self, scope: Any, receive: Any, send: Any) -> None:
        closed = False

        async def tracked(message: Any) -> None:
            nonlocal closed
            if message["type"] in ("websocket.close", "websocket.http.response.start"):
                closed = True
            await send(message)

        cancel = trio.CancelScope()
        self._websockets.add(cancel)
        if self._closing_websockets:
            cancel.cancel()
        try:
            with cancel:
                await self._app(scope, receive, tracked)
            if cancel.cancel_called and not closed:
                # Before accept this is an HTTP 403; after, a close frame.
                with trio.CancelScope(shield=True) as shielded:
                    shielded.deadline = trio.current_time() + self._finish_timeout
                    await send({"type": "websocket.close", "code": CLOSE_GOING_AWAY,
                                "reason": "server shutting down"})
        finally:
            self._websockets.discard(cancel)
            self._notify()

    async def _send(self, scope: Any, body: _RequestBody, send: Any, message: Any) -> None:
        if message["type"] == "http.response.start" and body.pending:
            if message["status"] >= 400:
                await body.drain(limit=self._unread_body_limit, max_wait=self._unread_body_timeout)
            if body.pending and scope.get("http_version", "1.1") in ("1.0", "1.1"):
                message = {**message, "headers": [*message.get("headers", ()), _CLOSE]}
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            with trio.CancelScope(shield=True) as shielded:
                shielded.deadline = trio.current_time() + self._finish_timeout
                await send(message)
            # A cancel held off by the shield is delivered now.
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        await send(message)


class _RequestBody:
    """A request's body as seen through the app's `receive`: whether any of it is still to come."""

    def __init__(self, receive: Any, headers: list[tuple[bytes, bytes]]) -> None:
        self._receive = receive
        self.declared: int | None = None
        chunked = False
        for name, value in headers:
            name = name.lower()
            if name == b"content-length":
                self.declared = int(value)  # h11 has checked it: digits, at most 20 of them
            elif name == b"transfer-encoding":
                chunked = True
        self.pending = chunked or bool(self.declared)
        self.received = 0
        self._readers = 0
        self._arrived = trio.Event()

    async def receive(self) -> Any:
        """The app's `receive`, keeping count."""
        self._readers += 1
        try:
            message = await self._receive()
        finally:
            self._readers -= 1
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.pending = False
        elif message["type"] == "http.disconnect":
            self.pending = False  # nothing more will come, nor can a reply reach the client
        self._arrived.set()
        self._arrived = trio.Event()
        return message

    async def drain(self, *, limit: int, max_wait: float) -> None:
        """Let the rest of a body of up to `limit` bytes arrive, for `max_wait` seconds at most.

        quart reads a body in a task of its own, which may be waiting for the next part
        right now: then wait for it to take that part rather than read beside it.
        """
        if self.declared is not None and self.declared > limit:
            return
        with trio.move_on_after(max_wait):
            while self.pending and self.received <= limit:
                if self._readers:
                    await self._arrived.wait()
                else:
                    await self.receive()


async def _drain_after_reply(body: _RequestBody, *, limit_s: float = DRAIN_AFTER_REPLY_TIMEOUT) -> None:
    """Read and drop the rest of a body the app left unread, until the request is over.

    hypercorn hands a body to the app through a queue of ten parts and, once the app has
    returned, puts `http.disconnect` on that same queue before it closes the connection. With
    nobody reading, a client still uploading fills the queue and both wait forever: the
    connection is never closed (seen with a 5 MiB body refused with 413 under load). Reading
    until that `http.disconnect` lets hypercorn close it at once.
    """
    with trio.move_on_after(limit_s):
        while True:
            try:
                message = await body.receive()
            except (trio.ClosedResourceError, trio.EndOfChannel, trio.BrokenResourceError):
                return
            if message["type"] == "http.disconnect":
                return


async def _refuse(scope: Any, send: Any, status: int, message: str = "") -> None:
    """Answer `status` with `message` (as both the admin APIs' ``detail`` and an OpenAI error)."""
    body = b""
    headers = [_CLOSE]
    if message:
        body = json.dumps({"detail": message, "error": {"message": message, "type": "invalid_request_error",
                                                        "param": None, "code": "bad_request"}}).encode()
        headers.append((b"content-type", b"application/json"))
    headers.append((b"content-length", str(len(body)).encode()))
    if scope["type"] == "websocket":
        if status == 431:
            await send({"type": "websocket.close", "code": 1009})  # before accept: an HTTP 403
        elif "websocket.http.response" in (scope.get("extensions") or {}):
            await send({"type": "websocket.http.response.start", "status": status,
                        "headers": headers[1:]})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})  # before accept: an HTTP 403
        return
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
