"""Counting a reply's tokens as it passes: the worker's `usage` when it reports one, else one per
streamed chunk. Works on raw bytes, so the relay never decodes a body it only forwards.

Audio seconds come from the reply's headers: `X-Audio-Seconds` (a transcription: the length of
the audio heard), or `X-Audio-Bytes-Per-Second` with `X-Audio-Header-Bytes` (speech streamed
as it is made: the seconds in the bytes relayed, so a reply cut short counts what was sent).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

MAX_USAGE_SCAN = 8 << 20  # a non-streamed body larger than this is relayed without reading usage
MAX_AUDIO_SECONDS = 1e7  # a header claiming more (about 115 days) is not believed


def _number(headers: dict[str, str], name: str) -> float | None:
    try:
        value = float(headers[name])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) and 0 <= value <= MAX_AUDIO_SECONDS * 1e3 else None


class UsageCounter:
    """Tokens of one reply; `feed` every chunk, then read `usage()`."""

    def __init__(self, sse: bool, headers: Iterable[tuple[str, str]] = ()) -> None:
        self.sse = sse
        self.charged = 0
        self.chunks = 0
        self.bytes = 0
        self.reported: tuple[int, int] | None = None
        self._buffer = bytearray()
        self._tail = b""
        named = {k.lower(): v for k, v in headers}
        self._audio_seconds = _number(named, "x-audio-seconds")
        rate = _number(named, "x-audio-bytes-per-second")
        self._bytes_per_second = rate if rate else None
        self._header_bytes = _number(named, "x-audio-header-bytes") or 0.0
        # Audio is not JSON: reading it for a "usage" would only cost memory.
        self._scan = self._bytes_per_second is None and not named.get("content-type", "").startswith("audio/")

    def feed(self, chunk: bytes) -> int:
        """Account `chunk`; returns the tokens to charge now (streams are charged as they go)."""
        self.bytes += len(chunk)
        if not self.sse:
            if self._scan and len(self._buffer) + len(chunk) <= MAX_USAGE_SCAN:
                self._buffer += chunk
            return 0
        data = self._tail + chunk
        lines = data.split(b"\n")
        self._tail = lines.pop()
        new = 0
        for line in lines:
            if not line.startswith(b"data:") or line.startswith(b"data: [DONE]"):
                continue
            if b'"usage"' in line:
                self._read_usage(line[5:])
            if b'"choices": []' not in line and b'"choices":[]' not in line:
                new += 1
        self.chunks += new
        self.charged += new
        return new

    def _read_usage(self, payload: bytes) -> None:
        try:
            usage = json.loads(payload).get("usage")
            if isinstance(usage, dict):
                self.reported = (int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        except (ValueError, TypeError, AttributeError, RecursionError):
            pass

    def audio_seconds(self) -> float:
        """Seconds of audio in this reply (heard by an ASR model, or spoken by a TTS one); 0 for others."""
        if self._audio_seconds is not None:
            return min(self._audio_seconds, MAX_AUDIO_SECONDS)
        if self._bytes_per_second is not None:
            return min(max(0.0, self.bytes - self._header_bytes) / self._bytes_per_second, MAX_AUDIO_SECONDS)
        return 0.0

    def usage(self) -> tuple[int, int]:
        """(prompt, completion) tokens."""
        if not self.sse and self._buffer:
            self._read_usage(bytes(self._buffer))
        return self.reported or (0, self.chunks)
