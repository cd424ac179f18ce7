"""Zero-copy file answers in front of hypercorn: `os.sendfile` for the GETs a router claims.

hypercorn (0.18) copies every body byte (``bytes(message["body"])``, h11, ``send_all``), has
no zero-copy ASGI extension and keeps its socket to itself, so a 1 GiB download costs a
core. `serve_app(file_router=...)` therefore reads each plain-TCP connection's request
heads itself first: a plain GET/HEAD that the router answers with a file (200 or 206) gets
its head from here and its body from ``os.sendfile``; at the first request the router
declines, or anything unusual (a body, Expect, Upgrade, HTTP/1.0, an oversized or
malformed head, pipelined bytes), the connection goes to hypercorn together with the
bytes already read, and hypercorn serves it from there exactly as it would have.

`os.sendfile` runs on the event loop's thread: a file not in the page cache blocks the loop
for each disk read (the socket's buffer bounds one call), as nginx without `aio threads`
does; the hub's blobs are usually cached after their first check.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import trio

log = logging.getLogger("runtime.http.zerocopy")

__all__ = ["FileAnswer", "FileRouter", "HeadRequest", "ZeroCopy"]

_RECV = 64 * 1024
_SENDFILE_MAX = 1 << 30
_REFUSED_HEADERS = frozenset({"content-length", "transfer-encoding", "expect", "upgrade"})


@dataclass(frozen=True)
class HeadRequest:
    """A request with no body, as far as the zero-copy path needs it (header names lower-case)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]


@dataclass
class FileAnswer:
    """A 200/206 whose body is `length` bytes of the open file `fd` from `offset` (closed here).

    With `body` instead (fd -1), a small answer sent as it is (an error the router found).
    """

    status: int
    headers: list[tuple[str, str]]
    fd: int
    offset: int
    length: int
    body: bytes | None = None


FileRouter = Callable[[HeadRequest], Awaitable[FileAnswer | None]]
HandOff = Callable[[Any], Awaitable[None]]


@dataclass
class ZeroCopy:
    """The per-server state of the zero-copy path: its router, deadlines and what is in flight."""

    router: FileRouter
    max_header_bytes: int
    keep_alive_timeout: float
    answered: int = 0  # requests answered with sendfile (tests and benches read it)
    _busy: int = 0
    _idle: set[trio.CancelScope] = field(default_factory=set)
    _stopping: bool = False
    _changed: trio.Event = field(default_factory=trio.Event)

    async def handle(self, stream: Any, hand_off: HandOff) -> None:
        """Serve `stream` (a trio SocketStream) until the router declines, then `hand_off`."""
        buf = bytearray()
        try:
            while True:
                end = await self._read_head(stream, buf)
                if end is None:
                    await stream.aclose()
                    return
                request = _parse_head(bytes(buf[:end])) if end and len(buf) == end else None
                if request is None:
                    break
                self._busy += 1  # from here until answered, the drain waits for it
                try:
                    answer = await self._route(request)
                    if answer is None:
                        break
                    del buf[:end]
                    keep = await self._send(stream, request, answer)
                finally:
                    self._busy -= 1
                    self._changed.set()
                if not keep:
                    await stream.aclose()
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            with trio.CancelScope(shield=True):
                await stream.aclose()
            return
        await hand_off(_Replay(stream, bytes(buf)))

    async def _route(self, request: HeadRequest) -> FileAnswer | None:
        if self._stopping:
            return None
        try:
            return await self.router(request)
        except Exception:  # the ASGI app answers instead (and reports what is wrong)
            log.exception("zero-copy router failed on %s %s", request.method, request.path)
            return None

    async def _read_head(self, stream: Any, buf: bytearray) -> int | None:
        """The end of the next request head in `buf`, 0 to hand the bytes over as they are
        (an oversized head: hypercorn answers 431), or None when the connection is done.

        Like hypercorn, a connection is idle until a head is complete: the whole head must
        arrive within the keep-alive timeout (slow-header clients are closed).
        """
        with trio.CancelScope(deadline=trio.current_time() + self.keep_alive_timeout) as scope:
            self._idle.add(scope)
            if self._stopping:
                scope.cancel()
            try:
                while True:
                    end = buf.find(b"\r\n\r\n")
                    if end >= 0:
                        return end + 4
                    if len(buf) > self.max_header_bytes:
                        return 0
                    data = await stream.receive_some(_RECV)
                    if not data:
                        return None
                    buf += data
            finally:
                self._idle.discard(scope)
        return None

    async def _send(self, stream: Any, request: HeadRequest, answer: FileAnswer) -> bool:
        try:
            close = "close" in request.headers.get("connection", "").lower() or self._stopping
            lines = [f"HTTP/1.1 {answer.status} {HTTPStatus(answer.status).phrase}",
                     f"date: {formatdate(usegmt=True)}",
                     *(f"{name}: {value}" for name, value in answer.headers),
                     f"content-length: {answer.length}"]
            if close:
                lines.append("connection: close")
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            if request.method == "GET" and answer.body is not None:
                await stream.send_all(head + answer.body)  # one write: a small GET is one syscall
            else:
                await stream.send_all(head)
                if request.method == "GET":
                    await _sendfile(stream.socket, answer.fd, answer.offset, answer.length)
            self.answered += 1
        finally:
            if answer.fd >= 0:
                os.close(answer.fd)
        if close:
            await stream.aclose()
        return not close

    def close_idle(self) -> None:
        """Stop taking new requests; close connections waiting for one (the drain)."""
        self._stopping = True
        for scope in self._idle:
            scope.cancel()

    async def drain(self) -> None:
        """Wait until no zero-copy answer is being sent."""
        while self._busy:
            await self._changed.wait()
            self._changed = trio.Event()


async def _sendfile(sock: Any, fd: int, offset: int, length: int) -> None:
    out = sock.fileno()
    while length:
        try:
            sent = os.sendfile(out, fd, offset, min(length, _SENDFILE_MAX))
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                await trio.lowlevel.wait_writable(sock)
                continue
            raise trio.BrokenResourceError(str(error)) from None
        if sent == 0:  # the file is shorter than it was: the client sees a short body, not a hang
            raise trio.BrokenResourceError("file shrank while being sent")
        offset += sent
        length -= sent
        await trio.lowlevel.checkpoint_if_cancelled()


def _parse_head(head: bytes) -> HeadRequest | None:
    """A plain HTTP/1.1 GET/HEAD without a body, or None (hypercorn will answer it)."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return None
    lines = text[:-4].split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[0] not in ("GET", "HEAD") or parts[2] != "HTTP/1.1":
        return None
    target = parts[1]
    if not target.startswith("/"):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        name = name.lower()
        if not sep or not name or name != name.strip() or name in headers or name in _REFUSED_HEADERS:
            return None  # obs-fold, a repeated header, a body, or junk: not ours to judge
        headers[name] = value.strip(" \t")
    path, _, query = target.partition("?")
    return HeadRequest(parts[0], path, query, headers)


class _Replay(trio.abc.HalfCloseableStream):
    """A socket stream that first gives back the bytes the zero-copy path already read."""

    def __init__(self, stream: Any, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix
        self.socket = stream.socket  # hypercorn reads the peer and local addresses from it

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            size = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            await trio.lowlevel.checkpoint()
            return data
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()
