"""Choosing the node for an attempt: matching, free resources, waiting with a reason until one fits."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from runtime.control.messages import JobReport
from runtime.jobs.dispatch import AttemptOrder
from runtime.jobs.model import CommandStep, Resources
from runtime.jobs.routing import describe_need, fits, matching_nodes, pick
from runtime.jobs.store import RunStore

if TYPE_CHECKING:
    from runtime.scheduler.registry import NodeRecord
    from runtime.scheduler.service import Scheduler

Key = tuple[str, str, int, int | None]  # run, step, attempt, shard (None outside broadcast)
CHOOSE_POLL_S = 1.0


@dataclass
class _Live:
    node: str
    resources: Resources = field(default_factory=Resources)  # reserved on `node` while it runs
    events: tuple[trio.MemorySendChannel[Any], trio.MemoryReceiveChannel[Any]] = field(
        default_factory=lambda: trio.open_memory_channel(math.inf))

    reported: bool = False  # its node said something about it

    def put(self, item: Any) -> None:
        self.reported = self.reported or isinstance(item, JobReport)
        self.events[0].send_nowait(item)


class NodeChoosing:
    """The node-choosing half of `NodeExecutor`, which sets the state declared here."""

    scheduler: Scheduler
    store: RunStore
    _live: dict[Key, _Live]
    _turns: dict[tuple[str, str, str], int]
    _changed: trio.Event

    async def _choose(self, order: AttemptOrder, step: CommandStep) -> str:
        return (await self._until(order, step, lambda: self._candidate(step, order)))[0]

    async def wait_for_nodes(self, order: AttemptOrder, step: CommandStep) -> list[NodeRecord]:
        """Every node that may run the step, once there is one (the attempt notes why it waits)."""
        return await self._until(order, step, lambda: self.matching(step))

    async def _until(self, order: AttemptOrder, step: CommandStep, look: Callable[[], tuple[Any, str]]) -> Any:
        """What `look` finds once it finds something; meanwhile the attempt says why it waits."""
        noted = ""
        while True:
            changed = self._changed
            found, why = look()
            if found:
                return [found] if isinstance(found, str) else found
            if why != noted:
                noted = why
                await trio.to_thread.run_sync(partial(self.store.note_attempt, order.run_id, step.name,
                                                      order.attempt, f"pending: {why}"))
            with trio.move_on_after(CHOOSE_POLL_S):
                await changed.wait()

    def matching(self, step: CommandStep) -> tuple[list[NodeRecord], str]:
        """The connected nodes matching the step's selector with its resources free, by name; else why none."""
        from runtime.scheduler.registry import NodeState

        ready = [n for n in self.scheduler.registry.nodes(NodeState.READY)
                 if self.scheduler.mux_for(n.node_id) is not None]
        matching, why = matching_nodes(ready, step)
        need = step.resources
        if matching and (need.cpu or need.memory_mb or need.gpu):
            matching = [n for n in matching if fits(n, need, [v.resources for v in self._live.values()
                                                                  if v.node == n.node_id])]
            if not matching:
                return [], "no matching node has " + describe_need(need) + " free"
        return sorted(matching, key=lambda n: (n.name, n.node_id)), why

    def _candidate(self, step: CommandStep, order: AttemptOrder) -> tuple[str | None, str]:
        matching, why = self.matching(step)
        if not matching:
            return None, why
        mine = {n.node_id: 0 for n in matching}
        for live in self._live.values():
            if live.node in mine:
                mine[live.node] += 1
        return pick(matching, order, self._turns, mine)
