"""Choosing the node for an attempt: matching, free resources, waiting with a reason until one fits."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
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


class LiveAttempts(dict[Key, _Live]):
    """The attempts in flight by key, with how many run on each node kept as they come and go
    (least_loaded reads it per choice: no scan of every attempt in flight)."""

    def __init__(self) -> None:
        super().__init__()
        self.per_node: dict[str, int] = {}

    def _count(self, live: _Live, by: int) -> None:
        left = self.per_node.get(live.node, 0) + by
        if left:
            self.per_node[live.node] = left
        else:
            self.per_node.pop(live.node, None)

    def __setitem__(self, key: Key, live: _Live) -> None:
        if (old := self.get(key)) is not None:
            self._count(old, -1)
        super().__setitem__(key, live)
        self._count(live, 1)

    def __delitem__(self, key: Key) -> None:
        self._count(self[key], -1)
        super().__delitem__(key)

    def pop(self, key: Key, *default: Any) -> Any:
        """dict.pop, uncounting what it removes."""
        if key in self:
            live = super().pop(key)
            self._count(live, -1)
            return live
        return super().pop(key, *default)


class NodeChoosing:
    """The node-choosing half of `NodeExecutor`, which sets the state declared here."""

    scheduler: Scheduler
    store: RunStore
    _live: LiveAttempts
    _turns: dict[tuple[str, str, str], int]
    _changed: trio.Event
    # selector -> (registry generation, the ready nodes it matches by name, or why none)
    _matching: dict[tuple[tuple[str, str], ...], tuple[int, list[NodeRecord], str]]
    _db: Callable[[Callable[[], Any]], Awaitable[Any]]

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
                await self._db(partial(self.store.note_attempt, order.run_id, step.name, order.attempt,
                                       f"pending: {why}"))
            with trio.move_on_after(CHOOSE_POLL_S):
                await changed.wait()

    def matching(self, step: CommandStep) -> tuple[list[NodeRecord], str]:
        """The connected nodes matching the step's selector with its resources free, by name; else why none."""
        from runtime.scheduler.registry import NodeState

        registry = self.scheduler.registry
        cached = self._matching.get(step.selector)
        if cached is None or cached[0] != registry.generation:  # a node came, went or changed: match again
            found, why = matching_nodes(registry.nodes(NodeState.READY), step)
            cached = self._matching[step.selector] = (registry.generation, found, why)
        mux_for = self.scheduler.mux_for
        matching = [n for n in cached[1] if mux_for(n.node_id) is not None]
        why = "" if cached[1] else cached[2]
        if not matching:
            return [], why or "no node connected"
        need = step.resources
        if matching and (need.cpu or need.memory_mb or need.gpu):
            matching = [n for n in matching if fits(n, need, [v.resources for v in self._live.values()
                                                                  if v.node == n.node_id])]
            if not matching:
                return [], "no matching node has " + describe_need(need) + " free"
        return matching, why  # by name, as the registry lists them

    def _candidate(self, step: CommandStep, order: AttemptOrder) -> tuple[str | None, str]:
        matching, why = self.matching(step)
        if not matching:
            return None, why
        return pick(matching, order, self._turns, self._live.per_node)
