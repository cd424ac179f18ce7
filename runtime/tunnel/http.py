"""HTTP requests carried over tunnel streams.

The control plane calls `send_request` on a node's mux; the node runs
`forward_to_worker` for every stream it accepts, replaying the request on a
worker listening on its localhost (runtime/tunnel/worker_client.py) and streaming
the reply back as it comes (SSE included; chunks closer than a millisecond are
gathered, see coalesce.py; nothing is buffered beyond the stream's window). A reset
on either side cancels the other: a client that disconnects from the gateway closes
the worker's connection, also before the worker answered.

Stream head (OPEN):  {"method": "POST", "path": "/v1/chat/completions", "headers": [[k, v], ...]}
Reply head (HEAD):   {"status": 200, "headers": [[k, v], ...]}
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import trio

from runtime.exception_groups import collapse, leaves
from runtime.tunnel.coalesce import Pacer, gather
from runtime.tunnel.errors import TunnelError
from runtime.tunnel.mux import Mux, Stream
from runtime.tunnel.worker_client import WorkerClient, WorkerConnectionError, WorkerUnreachable

# Hop-by-hop headers (RFC 9110 7.6.1) describe one connection and never cross the tunnel.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
    "upgrade", "proxy-authenticate", "proxy-authorization", "host",
})
MAX_FORWARDED_BODY = 64 * 1024 * 1024
PUMP_CHUNKS = 8  # chunks read ahead from the worker while the last batch is sent


@dataclass
class TunnelResponse:
    """A reply arriving over a stream; iterate `body()` to stream it, `close()` to abandon it."""

    status: int
    headers: list[tuple[str, str]]
    stream: Stream

    async def body(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk as the worker produced it."""
        async for chunk in self.stream:
            yield chunk

    async def read(self) -> bytes:
        """The whole body (for small replies)."""
        return b"".join([chunk async for chunk in self.body()])

    def close(self) -> None:
        """Abandon the reply; the node cancels the worker's request."""
        self.stream.reset("client closed the response")


def clean_headers(headers: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Drop hop-by-hop headers, keep order and repeats."""
    return [[k, v] for k, v in headers if k.lower() not in HOP_BY_HOP]


async def send_request(
    mux: Mux,
    method: str,
    path: str,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes | AsyncIterator[bytes] = b"",
    *,
    route: Mapping[str, Any] | None = None,
) -> TunnelResponse:
    """Send one HTTP request over a new stream and wait for the reply head.

    `route` adds fields to the stream head that tell the node where the request
    goes (e.g. {"replica_id": "r1"}).

    Cancellation: cancelling this call, or closing the returned response before
    its end, resets the stream, which cancels the request on the worker.
    """
    head = {**(route or {}), "method": method, "path": path, "headers": clean_headers(headers)}
    stream = await mux.open_stream(head)
    try:
        with _plain_tunnel_error():
            async with trio.open_nursery() as nursery:

                async def upload() -> None:
                    if isinstance(body, bytes):
                        if body:
                            await stream.send(body)
                    else:
                        async for chunk in body:
                            await stream.send(chunk)
                    stream.send_eof()

                nursery.start_soon(upload)
                head = await stream.receive_head()
                # A worker may answer before reading the whole body (e.g. 413): stop uploading.
                nursery.cancel_scope.cancel()
        stream.send_eof()
        return TunnelResponse(status=int(head["status"]),
                              headers=[(k, v) for k, v in head.get("headers", [])], stream=stream)
    except BaseException:
        stream.reset("request abandoned")
        raise


@contextmanager
def _plain_tunnel_error() -> Iterator[None]:
    """A group of tunnel errors only (the upload and the wait for the head both saw the reset)
    is raised as its first one: callers catch TunnelError, not groups. Anything else, Cancelled
    included, passes unchanged."""
    try:
        yield
    except BaseExceptionGroup as group:
        tunnel, rest = group.split(TunnelError)
        if tunnel is None or rest is not None:
            raise
        raise next(leaves(tunnel)) from None


async def forward_to_worker(stream: Stream, client: WorkerClient, base_url: str) -> None:
    """Replay the stream's request on the worker at `base_url`, stream the reply back.

    The request body is read whole first (the gateway caps bodies at a few MiB), so a
    kept-alive connection the worker closed can be retried safely. A reset of the stream
    at any point, also while the worker has not answered yet, closes the worker's
    connection: that is how the worker learns its client went away.

    Error handling: a worker that cannot be reached answers 502 with an OpenAI-style
    error body; a reset from the peer cancels the worker request (raising nothing), also
    when it comes inside an exception group. Anything else propagates: the caller runs
    each stream under its own `boundary`.
    """
    # except*: the relay runs a nursery, so a reset can arrive wrapped in a group.
    try:
        with trio.CancelScope() as scope:
            stream.on_reset(scope.cancel)
            await _exchange(stream, client, base_url)
    except* WorkerConnectionError as group:
        # The worker died mid-reply: the client sees the stream end abruptly, not a clean end.
        stream.reset(f"worker connection failed: {group.exceptions[0]}")
    except* TunnelError:
        pass  # reset by the peer, or the node's connection is gone: nobody to answer


async def _exchange(stream: Stream, client: WorkerClient, base_url: str) -> None:
    head: dict[str, Any] = stream.head
    body = await _request_body(stream)
    if body is None:
        await send_error(stream, 413, f"the request body is larger than {MAX_FORWARDED_BODY} bytes")
        return
    try:
        response = await client.send(head.get("method", "GET"), base_url + head.get("path", "/"),
                                     [(k, v) for k, v in head.get("headers", [])], body)
    except (WorkerUnreachable, WorkerConnectionError) as exc:
        await send_error(stream, 502, f"worker unreachable: {exc}")
        return
    try:
        stream.send_head({"status": response.status, "headers": clean_headers(response.headers)})
        await _relay_body(response.iter_raw(), stream)
        stream.send_eof()
    finally:
        await response.aclose()


async def _relay_body(chunks: AsyncIterator[bytes], stream: Stream) -> None:
    """Send the worker's reply on `stream`; a fast one in gathered batches (see coalesce)."""
    send_chunk, receive_chunk = trio.open_memory_channel[bytes](PUMP_CHUNKS)

    async def pump() -> None:
        async with send_chunk:
            async for chunk in chunks:
                await send_chunk.send(chunk)

    async def receive_some() -> bytes:
        try:
            return await receive_chunk.receive()
        except trio.EndOfChannel:
            return b""

    with collapse():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump)
            pacer = Pacer()
            while chunk := await receive_some():
                if pacer.fast():
                    chunk = await gather(receive_some, chunk)
                await stream.send(chunk)
                pacer.wrote()


async def _request_body(stream: Stream) -> bytes | None:
    """The whole request body, or None past MAX_FORWARDED_BODY."""
    parts, size = [], 0
    async for chunk in stream:
        size += len(chunk)
        if size > MAX_FORWARDED_BODY:
            return None
        parts.append(chunk)
    return b"".join(parts)


async def send_error(stream: Stream, status: int, message: str) -> None:
    """Answer a tunnelled request with an OpenAI-style error body."""
    body = json.dumps({"error": {"message": message, "type": "upstream_error", "code": status}}).encode()
    stream.send_head({"status": status, "headers": [["content-type", "application/json"],
                                                      ["content-length", str(len(body))]]})
    await stream.send(body)
    stream.send_eof()
