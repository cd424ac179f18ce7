"""Which sequence id a request runs in, and which cached prefixes survive: the KV pool's books.

Every sequence id of the generation context either runs a request or is idle; an idle one
keeps the tokens its last request left in the KV cache. A new request takes the idle
sequence sharing the longest prefix with its prompt (so a chat's or a session's next turn
evaluates only what it adds), or else the least recently used one. The pool has
`kv_tokens` cells (the memory budget): a running request reserves room for its prompt and
its completion up front, so a decode never runs out of cells; when that room is missing,
idle caches are dropped least recently used first; when even that is not enough, the
request waits for a running one to finish.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# An idle sequence counts as a match when the shared prefix is at least this much of what it
# holds or of the prompt; below, taking it would wipe another conversation's cache to reuse
# a few tokens (a system prompt, say).
MIN_SHARE = 0.5


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class Slot:
    """One sequence id: what its cache holds and when it was last used."""

    seq: int
    tokens: list[int] = field(default_factory=list)
    busy: bool = False
    last_used: int = 0


@dataclass(frozen=True)
class Lease:
    """A sequence given to a request: its id, the prompt tokens already cached, the reservation."""

    seq: int
    reused: int
    reserved: int


class PrefixCache:
    """The books of a KV pool of `kv_tokens` cells shared by `n_seq` sequence ids."""

    def __init__(self, n_seq: int, kv_tokens: int, forget: Callable[[int, int], bool], *,
                 reuse: bool = True):
        self.slots = [Slot(seq) for seq in range(n_seq)]
        self.reuse = reuse  # False: every prompt is evaluated whole (for comparisons)
        self.kv_tokens = kv_tokens
        self.forget = forget  # forget(seq, start): drop the seq's cells from start; False: all
        self.reserved = 0
        self.evictions = 0
        self._clock = 0

    @property
    def cached_tokens(self) -> int:
        """Tokens held by idle sequences."""
        return sum(len(s.tokens) for s in self.slots if not s.busy)

    @property
    def cached_sequences(self) -> int:
        """Idle sequences that hold a cache."""
        return sum(1 for s in self.slots if not s.busy and s.tokens)

    def acquire(self, prompt: Sequence[int], need: int) -> Lease | None:
        """A sequence for `prompt` with room for `need` cells, or None if there is none now."""
        idle = [s for s in self.slots if not s.busy]
        if not idle:
            return None
        shares = {s.seq: common_prefix(s.tokens, prompt) if self.reuse else 0 for s in idle}
        matches = [s for s in idle if shares[s.seq]
                   and shares[s.seq] >= MIN_SHARE * min(len(s.tokens), len(prompt))]
        if matches:
            slot = max(matches, key=lambda s: (shares[s.seq], s.last_used))
        else:
            slot = min(idle, key=lambda s: (bool(s.tokens), s.last_used))
            shares[slot.seq] = 0  # a few shared tokens (a BOS) are not worth the bookkeeping
            if slot.tokens:  # another conversation's cache gives way
                self.evictions += 1
        # At least the last prompt token is evaluated again: its logits pick the first token.
        reused = min(shares[slot.seq], len(prompt) - 1, need)
        others = sorted((s for s in idle if s is not slot and s.tokens), key=lambda s: s.last_used)
        held = sum(len(s.tokens) for s in others)
        short = self.reserved + held + need - self.kv_tokens
        if short > held:
            return None
        for victim in others:
            if short <= 0:
                break
            short -= len(victim.tokens)
            self.forget(victim.seq, 0)
            victim.tokens = []
            self.evictions += 1
        if len(slot.tokens) > reused and not self.forget(slot.seq, reused):
            reused = 0
        slot.tokens = list(prompt[:reused])
        slot.busy = True
        self.reserved += need
        return Lease(slot.seq, reused, need)

    def release(self, lease: Lease, cached: Sequence[int]) -> None:
        """The request in `lease` ended; its sequence keeps `cached` (the tokens in its cells)."""
        slot = self.slots[lease.seq]
        self._clock += 1
        slot.tokens, slot.busy, slot.last_used = list(cached), False, self._clock
        self.reserved -= lease.reserved

    def clear(self) -> int:
        """Drop every idle cache (not thread-safe: the decode loop must be idle); how many."""
        dropped = 0
        for slot in self.slots:
            if not slot.busy and slot.tokens:
                self.forget(slot.seq, 0)
                slot.tokens = []
                dropped += 1
        return dropped

    def drop(self, lease: Lease) -> None:
        """The request in `lease` ended and its cells are in doubt: free them all."""
        self.forget(lease.seq, 0)
        self.release(lease, [])
