"""A raw HTTP/1.1 client over one TCP connection, for tests that need what httpx hides.

Partial bodies, a body sent only when the test says so, duplicate headers, several
requests on one connection, and whether the server closed the connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import trio


@dataclass
class RawResponse:
    """One parsed response: status, headers (lowercased names, in order) and body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header `name`, or None."""
        return next((v for k, v in self.headers if k == name), None)

    def values(self, name: str) -> list[str]:
        """Every value of header `name`."""
        return [v for k, v in self.headers if k == name]


class RawConnection:
    """One TCP connection to an ``http://127.0.0.1:PORT`` server."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = b""

    async def send(self, data: bytes) -> None:
        """Send raw bytes."""
        await self.stream.send_all(data)

    async def send_head(self, method: str, path: str, headers: list[tuple[str, str]]) -> None:
        """Send a request line and headers (Host added); the body, if any, is the caller's to send."""
        lines = [f"{method} {path} HTTP/1.1", "Host: test", *(f"{k}: {v}" for k, v in headers)]
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def request(self, method: str, path: str, headers: list[tuple[str, str]] = (),
                      body: bytes = b"") -> RawResponse:
        """Send a whole request and read its response."""
        await self.send_head(method, path, [*headers, ("Content-Length", str(len(body)))])
        await self.send(body)
        return await self.response()

    async def response(self) -> RawResponse:
        """Read one response (Content-Length framed)."""
        while b"\r\n\r\n" not in self._buffer:
            await self._fill()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = [(k.strip().lower(), v.strip()) for k, v in (line.split(":", 1) for line in lines)]
        length = int(next((v for k, v in headers if k == "content-length"), "0"))
        while len(self._buffer) < length:
            await self._fill()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return RawResponse(int(status_line.split()[1]), headers, body)

    async def closed_by_server(self) -> bool:
        """True once the server has closed its side (EOF or reset), False if it sends more bytes."""
        try:
            data = await self.stream.receive_some()
        except trio.BrokenResourceError:
            return True
        self._buffer += data
        return not data

    async def _fill(self) -> None:
        data = await self.stream.receive_some()
        if not data:
            raise EOFError("the server closed the connection")
        self._buffer += data


@asynccontextmanager
async def open_raw_connection(url: str) -> AsyncIterator[RawConnection]:
    """A connection to the server at `url` (``http://127.0.0.1:PORT``), closed on leaving."""
    parts = urlsplit(url)
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    async with stream:
        yield RawConnection(stream)
