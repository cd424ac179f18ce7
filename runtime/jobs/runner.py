"""Driving one run: its steps as a DAG, each step's attempts with timeouts, retries and backoff.

A step starts once every step it needs has succeeded; a need that ended otherwise skips it.
Each attempt is recorded pending → dispatched (with the leader epoch) → running → its end
before the next begins, so a restarted engine finds at most one live attempt per step and
settles it (re-attached by the executor, or `lost`) before deciding on a retry.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import trio

from runtime.jobs.dispatch import AttemptOrder, Outcome, StepExecutor, holds_itself
from runtime.jobs.errors import IllegalTransition, LeaseLost, StaleEpoch
from runtime.jobs.metrics import JobMetrics
from runtime.jobs.model import JobSpec, Retries, Step
from runtime.jobs.records import StepRecord
from runtime.jobs.states import LIVE_ATTEMPT, RETRYABLE
from runtime.jobs.store import RunStore

log = logging.getLogger(__name__)
T = TypeVar("T")
Db = Callable[..., Awaitable[Any]]


def backoff_delay(retries: Retries, failed_attempt: int, rng: random.Random) -> float:
    """Seconds to wait after attempt `failed_attempt` failed: doubling from `backoff`, capped,
    scaled by a random factor within ±jitter so retries of many runs spread out."""
    base = min(retries.backoff * 2 ** (failed_attempt - 1), retries.backoff_max)
    return base * rng.uniform(1 - retries.jitter, 1 + retries.jitter)


@dataclass
class RunContext:
    """What driving one run needs: the run, its definition snapshot, and the engine's parts."""

    run_id: str
    spec: JobSpec
    params: dict[str, Any]
    epoch: int
    store: RunStore
    executor: StepExecutor
    db: Db
    clock: Callable[[], float]
    rng: random.Random
    metrics: JobMetrics
    cancel_reason: str | None = None  # set when the run is cancelled on purpose (not a shutdown)
    fresh: bool = False  # just started by this engine: its steps are all waiting, none read back
    # A fire prepared ahead of its due time: due then (`clock`'s seconds), and that instant on
    # Trio's clock, before which its first attempt is not sent (runtime.jobs.engine).
    due_at: float | None = None
    not_before: float | None = None


async def drive_run(ctx: RunContext) -> str:
    """Run every step to its end; returns the run's final state and records nothing about the run
    itself (the engine does). Cancellation: attempts in flight are recorded `cancelled`."""
    done = {step.name: trio.Event() for step in ctx.spec.steps}
    ended: dict[str, str | None] = {}  # how each step ended here (None: before a restart)
    if len(ctx.spec.steps) == 1:  # the common case: no task and nursery of its own
        await _drive_step(ctx, ctx.spec.steps[0], done, ended)
    else:
        async with trio.open_nursery() as nursery:
            for step in ctx.spec.steps:
                nursery.start_soon(_drive_step, ctx, step, done, ended)
    if all(ended.get(step.name) is not None for step in ctx.spec.steps):
        states = ended  # every step ended here, as recorded: nothing to read back
    else:
        states = {s.step: s.state for s in await ctx.db(ctx.store.steps, ctx.run_id)}
    for bad in ("failed", "lost", "timed_out", "cancelled"):
        if bad in states.values():
            return "failed" if bad == "lost" else bad
    return "succeeded"


async def _drive_step(ctx: RunContext, step: Step, done: dict[str, trio.Event],
                      ended: dict[str, str | None]) -> None:
    try:
        ended[step.name] = await _step(ctx, step, done)
    finally:
        done[step.name].set()


async def _step(ctx: RunContext, step: Step, done: dict[str, trio.Event]) -> str | None:
    """Drive one step to its end; the state it was recorded in, or None if it had ended before."""
    if ctx.fresh:
        record = StepRecord(ctx.run_id, step.name, "waiting", 0, "")
    else:
        record = next(s for s in await ctx.db(ctx.store.steps, ctx.run_id) if s.step == step.name)
    retries = ctx.spec.retries_of(step)
    last: str | None = None
    waiting = record.state == "waiting"
    if waiting:
        for need in step.needs:
            await done[need].wait()
        states = {s.step: s.state for s in await ctx.db(ctx.store.steps, ctx.run_id)} if step.needs else {}
        failed = [n for n in step.needs if states.get(n) != "succeeded"]
        if failed:
            await ctx.db(ctx.store.set_step_state, ctx.run_id, step.name, "skipped",
                         reason=f"need {failed[0]!r} {states.get(failed[0])}")
            return "skipped"
    elif record.state == "running":  # a restarted engine: settle the attempt it left behind
        attempts = await ctx.db(ctx.store.attempts, ctx.run_id, step.name)
        if attempts and attempts[-1].state == "pending":  # never dispatched: nothing runs it, send it now
            last = await _attempt(ctx, step, attempts[-1].attempt)
        elif attempts and attempts[-1].state in LIVE_ATTEMPT:
            last = await _recover(ctx, step, attempts[-1].attempt, attempts[-1].state)
        elif attempts:
            last = attempts[-1].state
    else:
        return None  # already ended before a restart
    number = record.attempts
    # Prepared ahead, for an executor that waits for the due time itself: the attempt is created
    # pending, and the executor records it dispatched just before it sends it. For one that cannot,
    # the attempt is created at the due time. Either way a plane that dies before then leaves a run
    # of which nothing was sent, which the next engine puts back to pending (RunStore.unprepare).
    prepared = waiting and ctx.not_before is not None
    if prepared and not holds_itself(ctx.executor, _order(ctx, step, 1)):
        await trio.sleep_until(ctx.not_before or 0.0)
        prepared = False
    while last != "succeeded" and (last is None or (last in RETRYABLE and number < retries.max_attempts)):
        if last is not None:
            await trio.sleep(backoff_delay(retries, number, ctx.rng))
        # Created already dispatched (and the step started) in one transaction: a restarted engine
        # finds a dispatched attempt and settles it, as after any dispatch.
        # Recorded dispatched at its due time when prepared ahead: that is when it is sent.
        now = max(ctx.clock(), ctx.due_at or 0.0)
        number = await ctx.db(ctx.store.dispatch_attempt, ctx.run_id, step.name, now=now, epoch=ctx.epoch,
                              start_step=waiting, sent=not prepared)
        waiting = prepared = False
        last = await _attempt(ctx, step, number, dispatched=True)
    await ctx.db(ctx.store.finish_step, ctx.run_id, step.name, last)
    return last


def _order(ctx: RunContext, step: Step, number: int) -> AttemptOrder:
    return AttemptOrder(ctx.run_id, ctx.spec.tenant, ctx.spec.name, step, number, ctx.epoch,
                        dict(ctx.params), ctx.spec.timeout_of(step), ctx.spec.routing_of(step),
                        not_before=ctx.not_before)


async def _attempt(ctx: RunContext, step: Step, number: int, *, dispatched: bool = False) -> str:
    """Dispatch one attempt (recorded dispatched already, or now) and record how it ended; returns that state."""
    if not dispatched:
        set_state = partial(ctx.store.set_attempt_state, ctx.run_id, step.name, number)
        await ctx.db(set_state, "dispatched", now=ctx.clock(), epoch=ctx.epoch)
    order = _order(ctx, step, number)
    return await _settle(ctx, step, number, "dispatched",
                         lambda started: ctx.executor.run_attempt(order, started))


async def _recover(ctx: RunContext, step: Step, number: int, state: str) -> str:
    """Settle an attempt a previous engine dispatched: re-attached by the executor, or lost."""
    order = _order(ctx, step, number)

    async def recover(started: Callable[[str | None], Awaitable[None]]) -> Outcome:
        outcome = await ctx.executor.recover(order, started)
        return outcome or Outcome("lost", reason="the engine restarted and no node re-attached this attempt")

    return await _settle(ctx, step, number, state, recover)


async def _settle(ctx: RunContext, step: Step, number: int, state: str,
                  call: Callable[[Callable[[str | None], Awaitable[None]]], Awaitable[Outcome]]) -> str:
    set_state = partial(ctx.store.set_attempt_state, ctx.run_id, step.name, number)
    current = state

    async def started(node: str | None) -> None:
        nonlocal current
        if current == "dispatched":
            await ctx.db(set_state, "running", now=ctx.clock(), node=node)
            current = "running"

    timeout = ctx.spec.timeout_of(step)
    outcome: Outcome | None = None
    began = trio.current_time()
    held = max(0.0, ctx.not_before - began) if ctx.not_before is not None else 0.0  # not the step's time
    try:
        with trio.move_on_after(timeout + held if timeout is not None else float("inf")) as scope:
            outcome = await call(started)
        if scope.cancelled_caught:
            outcome = Outcome("timed_out", reason=f"no result within the step timeout ({timeout:g} s)")
    except StaleEpoch as e:
        outcome = Outcome("failed", reason=str(e))
        with trio.CancelScope(shield=True):
            await _record(ctx, set_state, outcome)
        raise LeaseLost(f"deposed: {e}") from None
    except Exception as e:  # an executor's failure ends this attempt, never the engine
        log.warning("step %s of run %s attempt %d: executor error: %r", step.name, ctx.run_id, number, e)
        outcome = Outcome("failed", reason=f"executor error: {e}")
    finally:
        # Cancelled (bare, or in an executor's nursery's group): only a cancel of this run is
        # recorded; an engine shutdown leaves the attempt for the next engine to re-attach.
        if outcome is None and ctx.cancel_reason is not None:
            with trio.CancelScope(shield=True):
                await _record(ctx, set_state, Outcome("cancelled", reason=ctx.cancel_reason))
    assert outcome is not None
    await _record(ctx, set_state, outcome)
    ctx.metrics.attempt_finished(outcome.state, trio.current_time() - began - held)
    return outcome.state


async def _record(ctx: RunContext, set_state: Callable[..., None], outcome: Outcome) -> None:
    try:
        await ctx.db(set_state, outcome.state, now=ctx.clock(), node=outcome.node,
                     exit_code=outcome.exit_code, reason=outcome.reason)
    except IllegalTransition as e:  # a result for an attempt already settled: kept as it was
        log.info("%s", e)
