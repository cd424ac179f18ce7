"""The node's HTTP/1.1 client for its local workers: h11 over Trio sockets, with keep-alive.

Every tunnelled request ends in one call to a worker on the node's localhost. httpx spent
about a fifth of the plane + node process's CPU per relayed request (py-spy at c=1); this
client does only what the tunnel needs: one origin per worker, a request body already in
memory, the reply handed over chunk by chunk as it arrives.

Error handling: a worker that cannot be connected to raises WorkerUnreachable; a connection
that fails during the exchange raises WorkerConnectionError; a reply the worker sent before
it stopped reading the body (a 413) is returned, not an error. A kept-alive connection the
worker closed while idle is noticed before any reply byte: the request is sent once more on
a new connection, and the other connections idle to that worker are dropped.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Iterable
from urllib.parse import urlsplit

import h11
import trio

READ_SIZE = 64 * 1024
JOIN_BODY = 64 * 1024
MAX_IDLE_PER_ORIGIN = 32
CONNECT_TIMEOUT = 5.0
_DROPPED = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_BROKEN = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError)


class WorkerUnreachable(Exception):
    """The worker refused or did not accept the connection."""


class WorkerConnectionError(Exception):
    """The connection to the worker failed during the request or the reply."""


class _Connection:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.protocol = h11.Connection(h11.CLIENT)

    async def send_whole(self, request: h11.Request, body: bytes) -> None:
        """The request's head, body and end; a small body in the head's write, so a request
        costs one syscall (and one wake-up of the worker), not two."""
        protocol = self.protocol
        head = protocol.send(request) or b""
        data = protocol.send(h11.Data(data=body)) or b"" if body else b""
        data += protocol.send(h11.EndOfMessage()) or b""
        if len(data) <= JOIN_BODY:
            await self.stream.send_all(head + data)
        else:  # not worth copying a large body to save a syscall
            await self.stream.send_all(head)
            await self.stream.send_all(data)

    async def next_event(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self.protocol.next_event()
            if isinstance(event, h11.Event):
                return event
            if event is h11.PAUSED:  # h11's sentinels are classes: `is` does not narrow them
                return h11.PAUSED
            self.protocol.receive_data(await self.stream.receive_some(READ_SIZE))

    def reusable(self) -> bool:
        if self.protocol.our_state is h11.DONE and self.protocol.their_state is h11.DONE:
            self.protocol.start_next_cycle()
            return True
        return False

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self.stream.aclose()


class WorkerResponse:
    """A worker's reply: status and headers now, `iter_raw()` for the body, then `aclose()`."""

    def __init__(self, client: WorkerClient, origin: tuple[str, int], conn: _Connection,
                 head: h11.Response) -> None:
        self.status = head.status_code
        self.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers]
        self._client = client
        self._origin = origin
        self._conn: _Connection | None = conn

    async def iter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives (chunked framing removed, content untouched)."""
        conn = self._conn
        if conn is None:
            return
        while True:
            try:
                event = await conn.next_event()
            except _BROKEN as exc:
                raise WorkerConnectionError(f"{type(exc).__name__}: {exc}") from None
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return

    async def aclose(self) -> None:
        """Give the connection back for reuse if the reply was read to its end, else close it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._client._release(self._origin, conn)


class WorkerClient:
    """Keep-alive connections to the workers on this node; use as an async context manager."""

    def __init__(self, *, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.connect_timeout = connect_timeout
        self._idle: dict[tuple[str, int], collections.deque[_Connection]] = {}

    async def __aenter__(self) -> WorkerClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                await conn.aclose()

    async def send(self, method: str, url: str, headers: Iterable[tuple[str, str]], body: bytes) -> WorkerResponse:
        """Send one request with a body in memory; returns once the reply's head arrived."""
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise WorkerUnreachable(f"not an http:// worker URL: {url!r}")
        origin = (parts.hostname, parts.port or 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request = h11.Request(method=method, target=target, headers=[
            ("host", f"{origin[0]}:{origin[1]}"), ("content-length", str(len(body))),
            *((k, v) for k, v in headers if k.lower() not in _DROPPED)])
        for attempt in range(2):
            conn, reused = await self._acquire(origin, fresh=attempt > 0)
            try:
                try:
                    await conn.send_whole(request, body)
                except _BROKEN:
                    # A worker may answer before reading the whole body (a 413) and close: its
                    # reply still waits in our receive buffer, so read it. Without one, the
                    # read below fails as the send did.
                    pass
                event = await conn.next_event()
                while isinstance(event, h11.InformationalResponse):
                    event = await conn.next_event()
                if not isinstance(event, h11.Response):
                    raise h11.RemoteProtocolError("connection closed before the reply")
            except _BROKEN as exc:
                await conn.aclose()
                if reused and attempt == 0:
                    # A kept-alive connection the worker had closed (its idle timeout, a
                    # restart): the others idle as long are likely closed too.
                    await self._drop_idle(origin)
                    continue
                raise WorkerConnectionError(f"{type(exc).__name__}: {exc}") from None
            except BaseException:
                await conn.aclose()
                raise
            return WorkerResponse(self, origin, conn, event)
        raise AssertionError("unreachable")

    async def _acquire(self, origin: tuple[str, int], *, fresh: bool = False) -> tuple[_Connection, bool]:
        idle = self._idle.get(origin)
        if idle and not fresh:
            return idle.pop(), True
        try:
            with trio.fail_after(self.connect_timeout):
                stream = await trio.open_tcp_stream(*origin)
        except (OSError, trio.TooSlowError) as exc:
            raise WorkerUnreachable(f"{origin[0]}:{origin[1]}: {type(exc).__name__}") from None
        return _Connection(stream), False

    async def _drop_idle(self, origin: tuple[str, int]) -> None:
        for conn in self._idle.pop(origin, ()):
            await conn.aclose()

    async def _release(self, origin: tuple[str, int], conn: _Connection) -> None:
        idle = self._idle.setdefault(origin, collections.deque())
        if conn.reusable() and len(idle) < MAX_IDLE_PER_ORIGIN:
            idle.append(conn)
        else:
            await conn.aclose()
