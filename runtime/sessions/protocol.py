"""The session WebSocket's messages (seed 002), parsed strictly and answered in one shape.

Client -> server: {"type": "text", "content"}, {"type": "audio", "data": base64, "format"?},
{"type": "cancel"}. Server -> client: transcription, text_delta (the reply as it streams),
text (the whole reply, as seed 002 sends it), audio, error; each with a timestamp and the utterance id it belongs to.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
from dataclasses import dataclass
from typing import Any

MAX_TEXT_CHARS = 16_000


class MessageError(ValueError):
    """A client message that cannot be used; answered with an `error` message."""


@dataclass(frozen=True)
class TextIn:
    """The user said something."""

    content: str


@dataclass(frozen=True)
class AudioIn:
    """The user spoke; `audio` is the decoded bytes."""

    audio: bytes
    format: str


@dataclass(frozen=True)
class CancelIn:
    """Stop the reply being generated."""


ClientMessage = TextIn | AudioIn | CancelIn


def parse_client(raw: str | bytes, *, max_text_chars: int = MAX_TEXT_CHARS) -> ClientMessage:
    """Parse one client message; raise MessageError with a reason the client can act on."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MessageError(f"message is not JSON ({exc})") from None
    except RecursionError:
        raise MessageError("message is nested too deeply") from None
    if not isinstance(data, dict):
        raise MessageError("message must be a JSON object with a \"type\"")
    kind = data.get("type")
    if kind == "text":
        content = data.get("content")
        if not isinstance(content, str) or not content.strip():
            raise MessageError("text message needs a non-empty string \"content\"")
        if len(content) > max_text_chars:
            raise MessageError(f"text of {len(content)} characters exceeds the limit of {max_text_chars}")
        _check_unicode(content)
        return TextIn(content)
    if kind == "audio":
        encoded = data.get("data")
        if not isinstance(encoded, str) or not encoded:
            raise MessageError("audio message needs base64 \"data\"")
        try:
            audio = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise MessageError("audio \"data\" is not valid base64") from None
        if not audio:
            raise MessageError("audio \"data\" holds no bytes")
        fmt = data.get("format", "wav")
        if not isinstance(fmt, str) or not fmt.isalnum() or len(fmt) > 16:
            raise MessageError(f"audio format {fmt!r} is not a short name like wav or pcm16")
        return AudioIn(audio, fmt)
    if kind == "cancel":
        return CancelIn()
    raise MessageError(f"unknown message type {kind!r} (expected text, audio or cancel)")


def _check_unicode(text: str) -> None:
    # JSON's \ud800 escapes decode to lone surrogates, which no UTF-8 frame can carry back.
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise MessageError(f"text holds a lone surrogate {text[exc.start]!r} at character {exc.start}; "
                           "send valid Unicode") from None


def now_iso() -> str:
    """The current UTC time, as the seed's timestamps are written."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def server_message(kind: str, utterance_id: str | None, **fields: Any) -> str:
    """One server message as JSON text, with its timestamp and utterance id."""
    message = {"type": kind, **fields, "utterance_id": utterance_id, "timestamp": now_iso()}
    text = json.dumps(message, ensure_ascii=False)
    try:
        text.encode()
    except UnicodeEncodeError:  # a model's output with a lone surrogate: escaped, still valid JSON
        return json.dumps(message)
    return text
