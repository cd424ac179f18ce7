"""A small Redis client on trio sockets (RESP2): commands and pipelines over a bounded pool.

The limiter makes two or three Redis calls per request; a thread hop per call (redis-py's sync
client through trio.to_thread) costs more than the call itself (bench/_scale_limits.py --transport
measures both). Cancellation is safe: a connection whose call was interrupted is closed, never
reused with a reply still pending. Every call has a deadline (`timeout`).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import trio

from runtime.errors import FlowError

DEFAULT_TIMEOUT = 3.0  # per call; Redis answers in well under a millisecond, a starved plane far slower
DEFAULT_MAX_CONNECTIONS = 16

Arg = str | bytes | int | float


class RedisUnavailable(FlowError):
    """Redis could not be reached or did not answer in time."""


class RedisReplyError(FlowError):
    """Redis answered a command with an error (-ERR ..., -NOSCRIPT ...)."""


@dataclass(frozen=True)
class RedisAddress:
    """Where Redis is, from a redis:// or rediss:// URL."""

    host: str
    port: int
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """redis://[user:password@]host[:port][/db]; ValueError naming what is wrong."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"the Redis URL {redact(url)!r} must start with redis:// or rediss://")
        if not parts.hostname:
            raise ValueError(f"the Redis URL {redact(url)!r} names no host")
        path = parts.path.strip("/")
        try:
            port = parts.port or 6379
            db = int(path) if path else 0
        except ValueError:
            raise ValueError(f"the Redis URL {redact(url)!r} has a bad port or database number") from None
        return cls(parts.hostname, port, db, unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password else None, parts.scheme == "rediss")

    def __str__(self) -> str:
        return f"{self.host}:{self.port}/{self.db}"


def redact(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def encode(args: Sequence[Arg]) -> bytes:
    """One command in RESP."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Connection:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        # Plain TCP goes through the socket itself: SocketStream's wrappers cost more than the call.
        self.socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        self.buffer = bytearray()

    async def send(self, data: bytes) -> None:
        """Write all of `data`."""
        if self.socket is None:
            await self.stream.send_all(data)
            return
        view = memoryview(data)
        while view:
            view = view[await self.socket.send(view):]

    async def _fill(self) -> None:
        data = await (self.socket.recv(65536) if self.socket is not None else self.stream.receive_some(65536))
        if not data:
            raise RedisUnavailable("Redis closed the connection")
        self.buffer += data

    async def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            await self._fill()
        line = bytes(self.buffer[:end])
        del self.buffer[:end + 2]
        return line

    async def reply(self) -> Any:
        """One reply: str, int, bytes or None, list, or a RedisReplyError (returned, not raised)."""
        line = await self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RedisReplyError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            while len(self.buffer) < size + 2:
                await self._fill()
            data = bytes(self.buffer[:size])
            del self.buffer[:size + 2]
            return data
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [await self.reply() for _ in range(count)]
        raise RedisUnavailable(f"Redis sent something that is not RESP ({line[:40]!r})")


class RespClient:
    """Commands to one Redis over at most `max_connections` pooled connections."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        self.address = RedisAddress.parse(url)
        self.timeout = timeout
        self._idle: list[_Connection] = []
        self._slots = trio.Semaphore(max_connections)

    async def execute(self, *args: Arg) -> Any:
        """Run one command; its reply, or RedisReplyError raised; RedisUnavailable when unreachable."""
        (reply,) = await self.pipeline([args])
        if isinstance(reply, RedisReplyError):
            raise reply
        return reply

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Send every command in one write and read their replies; errors come back in the list."""
        if not commands:
            return []
        payload = b"".join(encode(c) for c in commands)
        try:  # without a scheduler pass when a connection is free (the send checkpoints anyway)
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            await self._slots.acquire()
        try:
            # A bare cancel scope, not fail_after: this is the hot path, and the scope is all it needs.
            with trio.CancelScope(deadline=trio.current_time() + self.timeout):
                while self._idle:  # a pooled connection Redis closed (a restart, its timeout): the next one
                    replies = await self._exchange(self._idle.pop(), payload, len(commands), stale_ok=True)
                    if replies is not None:
                        return replies
                replies = await self._exchange(None, payload, len(commands), stale_ok=False)
                assert replies is not None
                return replies
            raise RedisUnavailable(f"Redis at {self.address} did not answer within {self.timeout:g} s")
        finally:
            self._slots.release()

    async def _exchange(self, conn: _Connection | None, payload: bytes, count: int, *,
                        stale_ok: bool) -> list[Any] | None:
        """Send and read on `conn` (a new one if None); None if a pooled `conn` had been closed unread."""
        try:
            try:
                if conn is None:
                    conn = await self._connect()
                await conn.send(payload)
                first = await conn.reply()
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, RedisUnavailable):
                if stale_ok and conn is not None and not conn.buffer:  # nothing came back: closed before reading
                    await self._discard(conn)
                    return None
                raise
            replies = [first] + [await conn.reply() for _ in range(count - 1)]
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, RedisUnavailable) as exc:
            await self._discard(conn)
            raise RedisUnavailable(f"Redis at {self.address} is unreachable ({_why(exc)})") from None
        except BaseException:  # cancelled mid-reply: the connection cannot be reused
            await self._discard(conn)
            raise
        self._idle.append(conn)
        return replies

    async def _connect(self) -> _Connection:
        a = self.address
        stream: trio.abc.Stream
        if a.tls:
            stream = await trio.open_ssl_over_tcp_stream(a.host, a.port, ssl_context=ssl.create_default_context())
        else:
            stream = await trio.open_tcp_stream(a.host, a.port)
        conn = _Connection(stream)
        setup: list[tuple[str, list[Arg]]] = []
        if a.password is not None:
            setup.append(("AUTH", ["AUTH", *([a.username] if a.username else []), a.password]))
        if a.db:
            setup.append(("SELECT", ["SELECT", a.db]))
        if setup:
            await stream.send_all(b"".join(encode(c) for _, c in setup))
            for name, _ in setup:
                reply = await conn.reply()
                if isinstance(reply, RedisReplyError):
                    await trio.aclose_forcefully(stream)
                    raise RedisUnavailable(f"Redis at {a} refused {name}: {reply}")
        return conn

    async def _discard(self, conn: _Connection | None) -> None:
        if conn is not None:
            await trio.aclose_forcefully(conn.stream)

    async def aclose(self) -> None:
        """Close the idle connections."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await trio.aclose_forcefully(conn.stream)


def _why(exc: BaseException) -> str:
    # trio's connect failure wraps the attempts' errors; the first one says what happened.
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]
    for candidate in (exc, cause):
        if isinstance(candidate, OSError) and candidate.strerror:
            return candidate.strerror
    return str(exc) or type(exc).__name__
