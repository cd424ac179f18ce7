"""Stop sequences in streamed text: what may be sent now, and whether one was reached."""

from __future__ import annotations

from collections.abc import Sequence


class StopScanner:
    """Finds stop sequences in streamed text, holding back what may be the start of one."""

    def __init__(self, stops: Sequence[str]):
        self.stops = tuple(s for s in stops if s)
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Text that is safe to send now, and whether a stop sequence was reached."""
        if not self.stops:
            return text, False
        self.pending += text
        hits = [self.pending.find(s) for s in self.stops if s in self.pending]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        hold = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(self.pending)), hold, -1):
                if self.pending.endswith(stop[:size]):
                    hold = size
                    break
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(out):]
        return out, False

    def flush(self) -> str:
        """What was held back, once the stream ends without a stop."""
        out, self.pending = self.pending, ""
        return out
