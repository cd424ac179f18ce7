"""Many byte streams over one message connection, with per-stream flow control.

The control plane and a node share one WebSocket (the node dials out, so NAT is
no obstacle). `open_mux` runs a reader and a writer over it; either side opens
streams (the opener of the connection uses odd ids, the other even ones), each
with its own receive window: a receiver that stops reading stops only its own
sender, never the connection. Resetting a stream from either side makes the
other side's next operation on it raise `StreamReset`, which is how a client
disconnect cancels the request on the worker.

Text messages are not streams: they are the control protocol and come out of
`Mux.receive_control()` in order.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import trio
from trio_websocket import ConnectionClosed

from runtime.exception_groups import collapse
from runtime.tunnel import frames
from runtime.tunnel.batch import batch_sender, until_quiet
from runtime.tunnel.errors import TunnelClosed, TunnelError, TunnelProtocolError
from runtime.tunnel.frames import FrameType
from runtime.tunnel.stream import MAX_DATA_FRAME, Stream

DEFAULT_WINDOW = 256 * 1024
# Queued DATA frames of one stream are sent as one frame up to this size (see Mux._merge_data).
MAX_MERGED_FRAME = 4 * MAX_DATA_FRAME
DEFAULT_MAX_STREAMS = 1024
# DATA waits when this much is queued for the socket; small frames (WINDOW, RESET, ...) never wait.
WRITE_QUEUE_BYTES = 1024 * 1024
DRAIN_TIMEOUT = 1.0
# Messages queued together go out in one socket write up to this size (see batch.py).
MAX_BATCH_BYTES = 256 * 1024
GATHER_ROUNDS = 6


class MessageTransport(Protocol):
    """What the mux needs from a connection; trio-websocket's WebSocketConnection fits."""

    async def send_message(self, message: bytes | str) -> None: ...

    async def get_message(self) -> bytes | str: ...


class Mux:
    """The streams and control messages of one connection; made by `open_mux`."""

    def __init__(self, transport: MessageTransport, *, opener: bool, window: int, max_streams: int):
        self._transport = transport
        self._window = window
        self._max_streams = max_streams
        self._streams: dict[int, Stream] = {}
        self._next_id = 1 if opener else 2
        self._peer_parity = 0 if opener else 1
        self._queue: collections.deque[bytes | str] = collections.deque()  # str: control messages
        self._queued_data = 0
        self._queue_changed = trio.lowlevel.ParkingLot()
        self._incoming_send, self._incoming = trio.open_memory_channel[Stream](max_streams)
        self._control_send, self._control = trio.open_memory_channel[str](16)
        self._error: TunnelError | None = None
        self._sending = False  # a message has left the queue but not yet the transport

    @property
    def stream_count(self) -> int:
        """Streams currently open on this connection."""
        return len(self._streams)

    async def open_stream(self, head: dict[str, Any]) -> Stream:
        """Open a new stream to the peer, announcing `head`."""
        self._check_open()
        stream_id = self._next_id
        self._next_id += 2
        if stream_id > frames.MAX_STREAM_ID:
            raise TunnelError("stream ids exhausted on this connection; reconnect")
        stream = Stream(self, stream_id, head)
        self._streams[stream_id] = stream
        self._enqueue(frames.encode_json(FrameType.OPEN, stream_id, head))
        await trio.lowlevel.checkpoint()
        return stream

    async def accept_stream(self) -> Stream:
        """Wait for the peer to open a stream."""
        try:
            return await self._incoming.receive()
        except trio.EndOfChannel:
            raise self._error or TunnelClosed("connection closed") from None

    async def send_control(self, message: str) -> None:
        """Send a control-protocol message (text), in order with the frames queued before it."""
        self._check_open()
        self._queue.append(message)
        self._queue_changed.unpark_all()
        await trio.lowlevel.checkpoint()

    async def receive_control(self) -> str:
        """The next control-protocol message from the peer."""
        try:
            return await self._control.receive()
        except trio.EndOfChannel:
            raise self._error or TunnelClosed("connection closed") from None

    # -- internals -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._error is not None:
            raise self._error

    def _enqueue(self, message: bytes) -> None:
        if self._error is None:
            self._queue.append(message)
            self._queue_changed.unpark_all()

    async def _enqueue_data(self, message: bytes) -> None:
        while self._queued_data >= WRITE_QUEUE_BYTES:
            self._check_open()
            await self._queue_changed.park()
        self._check_open()
        self._queued_data += len(message)
        self._enqueue(message)
        await trio.lowlevel.checkpoint()

    async def _drain(self) -> None:
        # A clean exit flushes what the body queued (a last END, a RESET, a fatal error) before
        # closing: written out, not just taken off the queue, or the close would cut it short.
        with trio.move_on_after(DRAIN_TIMEOUT):
            while (self._queue or self._sending) and self._error is None:
                await self._queue_changed.park()

    def _forget(self, stream: Stream) -> None:
        self._streams.pop(stream.id, None)

    async def _write_loop(self) -> None:
        send_many = batch_sender(self._transport)
        while True:
            while not self._queue:
                await self._queue_changed.park()
            if send_many is not None:
                await self._let_queue_grow()
            batch = [self._take()]
            if send_many is not None:
                size = len(batch[0])
                while self._queue and size < MAX_BATCH_BYTES:
                    batch.append(self._take())
                    size += len(batch[-1])
            self._sending = True
            if len(batch) == 1:
                await self._transport.send_message(batch[0])
            else:
                assert send_many is not None
                await send_many(batch)
            self._sending = False
            if not self._queue:
                self._queue_changed.unpark_all()

    async def _let_queue_grow(self) -> None:
        """Yield while the tasks that woke us are still queuing (a reply's DATA and END behind
        its HEAD), a few scheduling rounds at most, so those frames leave in the same write."""
        await until_quiet(lambda: len(self._queue), rounds=GATHER_ROUNDS)

    def _take(self) -> bytes | str:
        """The next message of the queue (DATA merged with what follows it of its stream)."""
        message = self._queue.popleft()
        if isinstance(message, bytes) and message[0] == FrameType.DATA:
            self._queued_data -= len(message)
            if self._queue:
                message = self._merge_data(message)
            self._queue_changed.unpark_all()
        return message

    def _merge_data(self, first: bytes) -> bytes:
        """`first` joined with the DATA frames of the same stream queued right behind it.

        A sender faster than the socket then costs one message per write, not one per chunk.
        """
        prefix = first[:frames.HEADER_SIZE]
        parts = [first]
        size = len(first)
        queue = self._queue
        while queue:
            nxt = queue[0]
            if not isinstance(nxt, bytes) or nxt[:frames.HEADER_SIZE] != prefix:
                break
            if size + len(nxt) - frames.HEADER_SIZE > MAX_MERGED_FRAME:
                break
            queue.popleft()
            self._queued_data -= len(nxt)
            parts.append(memoryview(nxt)[frames.HEADER_SIZE:])
            size += len(nxt) - frames.HEADER_SIZE
        return first if len(parts) == 1 else b"".join(parts)

    async def _read_loop(self) -> None:
        while True:
            message = await self._transport.get_message()
            if isinstance(message, str):
                await self._control_send.send(message)
                continue
            frame = frames.decode(message)
            if frame.type is FrameType.OPEN:
                self._on_open(frame)
                continue
            stream = self._streams.get(frame.stream_id)
            # Frames for a stream we already forgot are the normal tail of a reset race.
            if stream is not None:
                stream._on_frame(frame)

    def _on_open(self, frame: frames.Frame) -> None:
        if frame.stream_id % 2 != self._peer_parity or frame.stream_id in self._streams:
            raise TunnelProtocolError(f"peer opened stream {frame.stream_id} with a bad id")
        head = frames.decode_head(frame)
        # Streams the peer opened and reset before they were accepted have left _streams but
        # still wait in the accept queue: both must stay bounded, or OPEN+RESET floods it.
        waiting = self._incoming_send.statistics().current_buffer_used
        if len(self._streams) >= self._max_streams or waiting >= self._max_streams:
            self._enqueue(frames.encode(FrameType.RESET, frame.stream_id, b"too many streams"))
            return
        stream = Stream(self, frame.stream_id, head)
        self._streams[frame.stream_id] = stream
        self._incoming_send.send_nowait(stream)

    def _close(self, error: TunnelError) -> None:
        if self._error is None:
            self._error = error
        for stream in list(self._streams.values()):
            stream._fail(self._error)
        self._streams.clear()
        self._incoming_send.close()
        self._control_send.close()
        self._queue_changed.unpark_all()


@asynccontextmanager
async def open_mux(
    transport: MessageTransport,
    *,
    opener: bool,
    window: int = DEFAULT_WINDOW,
    max_streams: int = DEFAULT_MAX_STREAMS,
) -> AsyncIterator[Mux]:
    """Run the mux over `transport` for the duration of the block.

    `opener` is True on the side that opened the connection (the node), so the
    two sides never pick the same stream id.

    Error handling: if the connection fails or the peer breaks the framing, the
    block is cancelled, every stream fails with the same error, and that error
    (TunnelClosed or TunnelProtocolError) is raised from the `async with`.
    """
    mux = Mux(transport, opener=opener, window=window, max_streams=max_streams)
    failures: list[TunnelError] = []
    body_finished = False
    with collapse():
        async with trio.open_nursery() as nursery:

            async def run(loop: Callable[[], Awaitable[None]]) -> None:
                try:
                    await loop()
                except TunnelError as exc:
                    failures.append(exc)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError,
                        ConnectionClosed) as exc:
                    failures.append(TunnelClosed(f"connection lost: {type(exc).__name__}: {exc}"))
                except Exception as exc:
                    # Whatever a peer makes the loops trip over closes this connection only.
                    failures.append(TunnelProtocolError(f"connection failed: {type(exc).__name__}: {exc}"))
                mux._close(failures[0])
                nursery.cancel_scope.cancel()

            nursery.start_soon(run, mux._read_loop)
            nursery.start_soon(run, mux._write_loop)
            try:
                yield mux
                body_finished = True
                await mux._drain()
            finally:
                mux._close(TunnelClosed("connection closed"))
                nursery.cancel_scope.cancel()
    if failures and not body_finished:
        raise failures[0]
