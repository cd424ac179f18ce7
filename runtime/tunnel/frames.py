"""The binary frames multiplexed over one control WebSocket.

Every binary WebSocket message is one frame: a 1-byte type, a 4-byte stream id
(big-endian) and a payload. Text messages are not frames: they carry the control
protocol (hello, heartbeat, desired state) and are handed up unchanged.

    OPEN    payload = JSON head of the stream (e.g. an HTTP request line and headers)
    HEAD    payload = JSON head of the reply (e.g. status and headers); at most once
    DATA    payload = bytes, counted against the receiver's window
    END     no payload: the sender will send no more DATA (half-close)
    RESET   payload = UTF-8 reason: the stream is abandoned in both directions
    WINDOW  payload = 4-byte increment: the receiver consumed that many bytes
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass
from typing import Any

from runtime.tunnel.errors import TunnelProtocolError

_HEADER = struct.Struct(">BI")
_WINDOW = struct.Struct(">I")
HEADER_SIZE = _HEADER.size
MAX_STREAM_ID = 2**32 - 1
MAX_HEAD_BYTES = 64 * 1024


class FrameType(enum.IntEnum):
    """What a frame says about its stream."""

    OPEN = 1
    HEAD = 2
    DATA = 3
    END = 4
    RESET = 5
    WINDOW = 6


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame."""

    type: FrameType
    stream_id: int
    payload: bytes = b""


def encode(kind: FrameType, stream_id: int, payload: bytes = b"") -> bytes:
    """Serialize one frame."""
    return _HEADER.pack(kind, stream_id) + payload


def encode_json(kind: FrameType, stream_id: int, head: dict[str, Any]) -> bytes:
    """Serialize an OPEN or HEAD frame carrying a JSON object."""
    payload = json.dumps(head, separators=(",", ":")).encode()
    if len(payload) > MAX_HEAD_BYTES:
        raise TunnelProtocolError(f"stream head of {len(payload)} bytes exceeds {MAX_HEAD_BYTES}")
    return encode(kind, stream_id, payload)


def encode_window(stream_id: int, increment: int) -> bytes:
    """Serialize a WINDOW frame granting `increment` more bytes."""
    return encode(FrameType.WINDOW, stream_id, _WINDOW.pack(increment))


def decode(message: bytes) -> Frame:
    """Parse one binary message; raise TunnelProtocolError if it is not a valid frame."""
    if len(message) < HEADER_SIZE:
        raise TunnelProtocolError(f"frame of {len(message)} bytes is shorter than its header")
    kind, stream_id = _HEADER.unpack_from(message)
    try:
        frame_type = FrameType(kind)
    except ValueError:
        raise TunnelProtocolError(f"unknown frame type {kind}") from None
    if stream_id == 0:
        raise TunnelProtocolError("stream id 0 is reserved")
    payload = message[HEADER_SIZE:]
    if frame_type in (FrameType.END,) and payload:
        raise TunnelProtocolError(f"{frame_type.name} frame carries a payload")
    if frame_type is FrameType.WINDOW and len(payload) != _WINDOW.size:
        raise TunnelProtocolError("WINDOW frame payload is not 4 bytes")
    return Frame(frame_type, stream_id, payload)


def window_increment(frame: Frame) -> int:
    """The increment carried by a WINDOW frame."""
    (increment,) = _WINDOW.unpack(frame.payload)
    return increment


def decode_head(frame: Frame) -> dict[str, Any]:
    """The JSON object carried by an OPEN or HEAD frame."""
    if len(frame.payload) > MAX_HEAD_BYTES:
        raise TunnelProtocolError(f"stream head of {len(frame.payload)} bytes exceeds {MAX_HEAD_BYTES}")
    try:
        head = json.loads(frame.payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise TunnelProtocolError(f"{frame.type.name} frame payload is not JSON") from None
    if not isinstance(head, dict):
        raise TunnelProtocolError(f"{frame.type.name} frame payload is not a JSON object")
    return head
