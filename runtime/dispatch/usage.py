"""Counting a reply's tokens as it passes: the worker's `usage` when it reports one, else one per
streamed chunk. Works on raw bytes, so the relay never decodes a body it only forwards."""

from __future__ import annotations

import json

MAX_USAGE_SCAN = 8 << 20  # a non-streamed body larger than this is relayed without reading usage


class UsageCounter:
    """Tokens of one reply; `feed` every chunk, then read `usage()`."""

    def __init__(self, sse: bool) -> None:
        self.sse = sse
        self.charged = 0
        self.chunks = 0
        self.reported: tuple[int, int] | None = None
        self._buffer = bytearray()
        self._tail = b""

    def feed(self, chunk: bytes) -> int:
        """Account `chunk`; returns the tokens to charge now (streams are charged as they go)."""
        if not self.sse:
            if len(self._buffer) + len(chunk) <= MAX_USAGE_SCAN:
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

    def usage(self) -> tuple[int, int]:
        """(prompt, completion) tokens."""
        if not self.sse and self._buffer:
            self._read_usage(bytes(self._buffer))
        return self.reported or (0, self.chunks)
