"""Cut an LLM's streamed reply into sentences, so each is spoken while the next is generated."""

from __future__ import annotations

import re

# A sentence ends at . ! ? (or their CJK forms, or an ellipsis), closing quotes or brackets
# included, followed by white space; or at a line break. "3.14" and "e.g.x" do not end one.
_END = re.compile(r"(?:[.!?…]+[\"')\]”’]*\s+|[。！？]+|\n+)")
MIN_CHARS = 8  # shorter pieces ("Hi. ", "1. ") wait for the next sentence: one TTS call, fewer gaps


class SentenceSplitter:
    """Feed text deltas in; whole sentences come out as soon as their end is seen."""

    def __init__(self, min_chars: int = MIN_CHARS) -> None:
        self.min_chars = min_chars
        self._buffer = ""

    def feed(self, delta: str) -> list[str]:
        """The sentences `delta` completed (stripped, non-empty), in order."""
        self._buffer += delta
        out: list[str] = []
        start = 0
        for match in _END.finditer(self._buffer):
            piece = self._buffer[start:match.end()].strip()
            if len(piece) >= self.min_chars:
                out.append(piece)
                start = match.end()
        self._buffer = self._buffer[start:]
        return out

    def flush(self) -> str | None:
        """What is left once the reply is complete (None when only white space)."""
        rest, self._buffer = self._buffer.strip(), ""
        return rest or None
