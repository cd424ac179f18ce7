"""One stream of a mux: a byte stream each way, with a head, a reply head and flow control.

Made by `Mux.open_stream` / `Mux.accept_stream` (runtime/tunnel/mux.py); the mux's reader
hands it frames, its sends go through the mux's write queue.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import trio

from runtime.tunnel import frames
from runtime.tunnel.errors import StreamReset, TunnelError, TunnelProtocolError
from runtime.tunnel.frames import FrameType

if TYPE_CHECKING:
    from runtime.tunnel.mux import Mux

MAX_DATA_FRAME = 64 * 1024


class Stream:
    """One bidirectional byte stream with a head (e.g. an HTTP request) and a reply head."""

    def __init__(self, mux: Mux, stream_id: int, head: dict[str, Any]):
        self._mux = mux
        self.id = stream_id
        self.head = head
        self._window = mux._window
        self._recv: collections.deque[bytes] = collections.deque()
        self._recv_bytes = 0
        self._unacked = 0
        self._recv_eof = False
        self._reply_head: dict[str, Any] | None = None
        self._send_window = mux._window
        self._sent_eof = False
        self._error: TunnelError | None = None
        self._changed = trio.lowlevel.ParkingLot()
        self._reset_callbacks: list[Callable[[], None]] = []

    # -- sending ---------------------------------------------------------------------------

    def send_head(self, head: dict[str, Any]) -> None:
        """Send the reply head (once, before any data from this side)."""
        self._check_open()
        self._mux._enqueue(frames.encode_json(FrameType.HEAD, self.id, head))

    async def send(self, data: bytes) -> None:
        """Send bytes, waiting for the peer's window; raises StreamReset or TunnelClosed."""
        view = memoryview(data)
        while view:
            while True:
                self._check_open()
                if self._sent_eof:
                    raise trio.ClosedResourceError("send after send_eof")
                if self._send_window > 0:
                    break
                await self._changed.park()
            n = min(len(view), self._send_window, MAX_DATA_FRAME)
            self._send_window -= n
            try:
                await self._mux._enqueue_data(frames.encode(FrameType.DATA, self.id, bytes(view[:n])))
            except BaseException:
                self._send_window += n
                raise
            view = view[n:]

    def send_eof(self) -> None:
        """Half-close: tell the peer no more data follows."""
        self._check_open()
        if not self._sent_eof:
            self._sent_eof = True
            self._mux._enqueue(frames.encode(FrameType.END, self.id))
            self._maybe_finished()

    def reset(self, reason: str = "cancelled") -> None:
        """Abandon the stream in both directions; safe to call from a cancelled task."""
        if self._error is not None:
            return
        self._error = StreamReset(reason, by_peer=False)
        self._fire_reset()
        self._mux._enqueue(frames.encode(FrameType.RESET, self.id, reason.encode()[:1024]))
        self._mux._forget(self)
        self._changed.unpark_all()

    # -- receiving -------------------------------------------------------------------------

    async def receive_head(self) -> dict[str, Any]:
        """Wait for the peer's reply head."""
        while self._reply_head is None:
            self._check_open()
            if self._recv_eof:
                raise StreamReset("stream ended without a reply head", by_peer=True)
            await self._changed.park()
        return self._reply_head

    async def receive_some(self) -> bytes:
        """The next chunk of data, or b"" once the peer has sent END."""
        while not self._recv:
            self._check_open()
            if self._recv_eof:
                return b""
            await self._changed.park()
        # Everything that arrived since the last call comes out as one chunk, so a reader slower
        # than the sender (a relay to a socket) makes few large writes instead of many small ones.
        chunk = self._recv.popleft() if len(self._recv) == 1 else b"".join(self._recv)
        self._recv.clear()
        self._recv_bytes = 0
        self._unacked += len(chunk)
        # Grant credit back in batches so a fast stream costs few WINDOW frames: the sender
        # still holds at least half a window, so it never stalls waiting for one.
        if self._unacked >= self._window // 2:
            if self._error is None and not self._recv_eof:
                self._mux._enqueue(frames.encode_window(self.id, self._unacked))
            self._unacked = 0
        return chunk

    def on_reset(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the stream is reset (by either side) or its connection fails.

        At once if that already happened. It runs inside the mux's reader: keep it short
        and synchronous (cancelling a scope is the intended use).
        """
        if self._error is not None:
            callback()
        else:
            self._reset_callbacks.append(callback)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await self.receive_some():
            yield chunk

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Leaving the block before both directions finished cleanly abandons the stream.
        if self._error is None and not (self._sent_eof and self._recv_eof):
            self.reset("closed before the end of the stream")

    # -- called by the mux's reader ------------------------------------------------------------

    def _on_frame(self, frame: frames.Frame) -> None:
        kind = frame.type
        if kind is FrameType.DATA:
            if self._recv_eof:
                raise TunnelProtocolError(f"stream {self.id}: DATA after END")
            if self._recv_bytes + self._unacked + len(frame.payload) > self._window:
                raise TunnelProtocolError(f"stream {self.id}: peer exceeded the receive window")
            if frame.payload:
                self._recv.append(frame.payload)
                self._recv_bytes += len(frame.payload)
        elif kind is FrameType.HEAD:
            if self._reply_head is not None:
                raise TunnelProtocolError(f"stream {self.id}: second HEAD frame")
            self._reply_head = frames.decode_head(frame)
        elif kind is FrameType.END:
            self._recv_eof = True
            self._maybe_finished()
        elif kind is FrameType.WINDOW:
            self._send_window += frames.window_increment(frame)
            if self._send_window > 2**31:
                raise TunnelProtocolError(f"stream {self.id}: window overflow")
        elif kind is FrameType.RESET:
            self._error = StreamReset(frame.payload.decode("utf-8", "replace") or "reset", by_peer=True)
            self._fire_reset()
            self._mux._forget(self)
        self._changed.unpark_all()

    def _fail(self, error: TunnelError) -> None:
        if self._error is None:
            self._error = error
            self._fire_reset()
        self._changed.unpark_all()

    def _fire_reset(self) -> None:
        callbacks, self._reset_callbacks = self._reset_callbacks, []
        for callback in callbacks:
            callback()

    def _check_open(self) -> None:
        if self._error is not None:
            raise self._error

    def _maybe_finished(self) -> None:
        if self._sent_eof and self._recv_eof:
            self._mux._forget(self)
