"""The life of runs, steps and step attempts, as state machines; anything else is refused.

    attempt:  pending ──▶ dispatched ──▶ running ──▶ succeeded | failed | timed_out | cancelled | lost
                 │             └──────────────────▶ (any of those: a result may come before "running")
                 └──▶ failed (could not be dispatched) | cancelled
    step:     waiting ──▶ running ──▶ succeeded | failed | timed_out | cancelled | lost
                 └──▶ skipped (a need did not succeed) | cancelled
    run:      pending ──▶ running ──▶ succeeded | failed | timed_out | cancelled
                 └──▶ skipped (misfire, concurrency forbid, starting deadline, suspend) | cancelled

A step is `running` from its first attempt until its last one ends (retries included); its
final state is its last attempt's. Attempts are numbered from 1; each retry is a new attempt
row, so a late result for an old attempt is recorded there and never overrides a newer one.
"""

from __future__ import annotations

from enum import StrEnum


class AttemptState(StrEnum):
    """A step attempt's state."""

    PENDING = "pending"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    LOST = "lost"


class StepState(StrEnum):
    """A step's state within one run."""

    WAITING = "waiting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    LOST = "lost"
    SKIPPED = "skipped"


class RunState(StrEnum):
    """A run's state."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


_ENDS = {"succeeded", "failed", "timed_out", "cancelled", "lost"}
ATTEMPT_MOVES: dict[str, frozenset[str]] = {
    "pending": frozenset({"dispatched", "failed", "cancelled"}),
    "dispatched": frozenset({"running"} | _ENDS),
    "running": frozenset(_ENDS),
}
STEP_MOVES: dict[str, frozenset[str]] = {
    "waiting": frozenset({"running", "skipped", "cancelled"}),
    "running": frozenset(_ENDS),
}
RUN_MOVES: dict[str, frozenset[str]] = {
    "pending": frozenset({"running", "skipped", "cancelled"}),
    "running": frozenset({"succeeded", "failed", "timed_out", "cancelled"}),
}
RETRYABLE = frozenset({"failed", "timed_out", "lost"})  # an attempt that ended so may be retried
LIVE_ATTEMPT = frozenset({"pending", "dispatched", "running"})


def can_move(moves: dict[str, frozenset[str]], current: str, wanted: str) -> bool:
    """True when `moves` lets a state go from `current` to `wanted`."""
    return wanted in moves.get(current, frozenset())


def is_final(moves: dict[str, frozenset[str]], state: str) -> bool:
    """True when `state` has no way out."""
    return state not in moves
