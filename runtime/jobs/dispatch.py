"""The seam between the engine and whatever runs a step attempt (a test double, a local
process, later a node over its control WebSocket)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import trio

from runtime.jobs.model import ParamValue, Routing, Step

OutcomeState = Literal["succeeded", "failed", "timed_out", "cancelled", "lost"]
Started = Callable[[str | None], Awaitable[None]]  # called once the attempt runs, with its node


@dataclass(frozen=True)
class AttemptOrder:
    """One step attempt to run: everything an executor needs, and the leader epoch (fencing)."""

    run_id: str
    tenant: str
    job: str
    step: Step
    attempt: int
    epoch: int
    params: dict[str, ParamValue] = field(default_factory=dict)
    timeout: float | None = None
    routing: Routing = field(default_factory=Routing)
    # A fire prepared ahead of its due time: nothing may start before this instant (Trio's clock);
    # None: at once. Retries and manual runs carry None (or an instant already past).
    not_before: float | None = None


async def hold(order: AttemptOrder) -> None:
    """Wait until the order may start (`not_before`); at once when it carries none."""
    if order.not_before is not None:
        await trio.sleep_until(order.not_before)


def holds_itself(executor: object, order: AttemptOrder) -> bool:
    """Whether `executor` waits for `order.not_before` itself, at the last moment, after preparing
    what it can (a node executor: the node choice and its note). An executor says so with an
    optional `holds_itself(order) -> bool` method; for the others the engine waits before calling.
    Such an executor gets a prepared attempt recorded pending, and records it dispatched
    (`RunStore.mark_dispatched`) once the wait is over, before anything of it leaves."""
    ask = getattr(executor, "holds_itself", None)
    return bool(ask(order)) if ask is not None else False


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as its executor saw it."""

    state: OutcomeState
    exit_code: int | None = None
    reason: str = ""
    node: str | None = None


class StepExecutor(Protocol):
    """Runs step attempts for the engine.

    Cancellation: the engine cancels `run_attempt` on timeout, run cancel or replace; the
    executor must stop what it started before it returns (SIGTERM, grace, SIGKILL).
    Error handling: an executor raises StaleEpoch when the order's epoch is fenced off; any
    other exception fails the attempt with its message.
    """

    async def run_attempt(self, order: AttemptOrder, started: Started) -> Outcome:
        """Run one attempt to its end; call `started(node)` once it is running."""
        ...

    async def recover(self, order: AttemptOrder, started: Started) -> Outcome | None:
        """An attempt a previous engine dispatched: wait for its result if it can still be
        learned (a node re-attaching it), or None when it is lost."""
        ...
