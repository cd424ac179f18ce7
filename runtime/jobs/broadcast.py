"""Broadcast routing (xxl-job's sharding broadcast): a step attempt runs on every node that may run it.

The first attempt counts the connected nodes matching the step's selector that have its
resources free: N of them run shard 0..N-1, each with FLOWCTL_SHARD_INDEX / FLOWCTL_SHARD_TOTAL
in its environment, its own log (`shard-K/log`, and its lines in the attempt's log marked
`[shard K]`) and its own artifacts (`shard-K/...`). The attempt succeeds when every shard
succeeded; otherwise it ends as its worst shard did (failed, then timed_out, lost, cancelled),
the reason naming the shards. Every shard runs to its end; cancelling the attempt (run cancel,
timeout) stops them all. A retry (the engine's, per the step's retry policy: attempt 2, ...)
keeps the shard total and re-runs only the shards that have not succeeded, with the same
indexes, on the nodes matching then: a lost node's shard k runs again as shard k elsewhere.
Shard rows live in the jobs database (`runtime.jobs.shards`).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import msgspec
import trio

from runtime.control.messages import JobAttempt
from runtime.jobs.dispatch import AttemptOrder, Outcome, Started, hold
from runtime.jobs.model import CommandStep

if TYPE_CHECKING:
    from runtime.jobs.node_executor import NodeExecutor

WORST_FIRST = ("failed", "timed_out", "lost", "cancelled")


async def run_broadcast(ex: NodeExecutor, order: AttemptOrder, step: CommandStep, message: JobAttempt,
                        started: Started) -> Outcome:
    """Run the attempt's shards (those not yet succeeded) on the matching nodes; their combined outcome."""
    run_id, attempt = order.run_id, order.attempt
    started = _once(started)
    await hold(order)  # prepared ahead: the shards are counted and placed at the due time
    total, done = await trio.to_thread.run_sync(ex.shards.earlier, run_id, step.name, attempt)
    nodes = await ex.wait_for_nodes(order, step)
    if total is None:
        total = len(nodes)
    todo = [k for k in range(total) if k not in done]
    for k, row in done.items():
        carried = row.reason if row.reason.startswith("succeeded in attempt") else f"succeeded in attempt {row.attempt}"
        await trio.to_thread.run_sync(partial(ex.shards.put, run_id, step.name, attempt, k, total, "succeeded",
                                              node=row.node, exit_code=row.exit_code, reason=carried))
    await trio.to_thread.run_sync(partial(
        ex.store.note_attempt, run_id, step.name, attempt,
        f"broadcast: {len(todo)} of {total} shards on " + ", ".join(sorted({n.name for n in nodes[:len(todo)]}))))
    outcomes: dict[int, Outcome] = {}

    async def shard(k: int, node: str) -> None:
        one = msgspec.structs.replace(message, shard=k, shard_total=total)
        outcome = Outcome("cancelled", reason="cancelled with its attempt", node=node)
        try:
            outcome = outcomes[k] = await ex.dispatch(order, step, one, started, node=node)
        finally:  # cancelled (run cancel, timeout): its node was told to stop it before dispatch returned
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(partial(
                    ex.shards.put, run_id, step.name, attempt, k, total, outcome.state, node=outcome.node or node,
                    exit_code=outcome.exit_code, reason=outcome.reason))

    async with trio.open_nursery() as nursery:
        for i, k in enumerate(todo):
            nursery.start_soon(shard, k, nodes[i % len(nodes)].node_id)
    return combine({**{k: Outcome("succeeded") for k in done}, **outcomes}, total)


async def recover_broadcast(ex: NodeExecutor, order: AttemptOrder, started: Started) -> Outcome | None:
    """Re-attach the shards a previous plane process dispatched; a shard not re-attached is lost."""
    run_id, name, attempt = order.run_id, order.step.name, order.attempt
    started = _once(started)
    rows = await trio.to_thread.run_sync(ex.shards.of, run_id, name, attempt)
    if not rows:
        return None
    total = rows[0].total
    outcomes = {r.shard: Outcome(r.state, exit_code=r.exit_code, reason=r.reason, node=r.node)  # type: ignore[arg-type]
                for r in rows if r.state != "dispatched"}

    async def one(shard: int, node: str) -> None:
        outcome = await ex.reattach((run_id, name, attempt, shard), node, order, started)
        outcome = outcomes[shard] = outcome or Outcome("lost", reason="its node did not re-attach it", node=node)
        await trio.to_thread.run_sync(partial(ex.shards.put, run_id, name, attempt, shard, total, outcome.state,
                                              node=node, exit_code=outcome.exit_code, reason=outcome.reason))

    async with trio.open_nursery() as nursery:
        for r in rows:
            if r.state == "dispatched" and r.node:
                nursery.start_soon(one, r.shard, r.node)
    for k in range(total):
        outcomes.setdefault(k, Outcome("lost", reason="the plane stopped while sending it"))
    return combine(outcomes, total)


def _once(started: Started) -> Started:
    """`started` called once, for the first shard that runs (the attempt has no one node)."""
    lock, began = trio.Lock(), False

    async def first(node: str | None) -> None:
        nonlocal began
        async with lock:
            if not began:
                await started(None)
                began = True

    return first


def combine(outcomes: dict[int, Outcome], total: int) -> Outcome:
    """All shards succeeded, or the worst state among them with the shards that ended so."""
    for state in WORST_FIRST:
        bad = sorted(k for k, o in outcomes.items() if o.state == state)
        if bad:
            first = outcomes[bad[0]]
            which = ("shard " if len(bad) == 1 else "shards ") + ", ".join(map(str, bad))
            return Outcome(first.state, exit_code=first.exit_code,
                           reason=f"{which} of {total} {state.replace('_', ' ')}: {first.reason}"[:1000])
    return Outcome("succeeded", exit_code=0, reason=f"all {total} shards succeeded")
