"""After a control plane (re)start, nodes get the lost-node timeout to come back.

A restarted plane knows its replicas (cluster.db) but none of its nodes until they
reconnect; the plane's own node is usually back first. Replicas on a node that has not
connected since the start stay where they are (shown `pending`, with a note) until
`lost_after` seconds after the start; only then are they placed elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import trio

from runtime.scheduler.reconcile import Replica
from runtime.scheduler.registry import NodeRegistry


class ReconnectWait:
    """Which nodes a freshly started plane still waits for, and what to tell the operator."""

    def __init__(self, registry: NodeRegistry, known_names: Mapping[str, str]):
        self._registry = registry
        self._names = dict(known_names)
        self.started_at: float | None = None

    def start(self) -> None:
        """The plane starts now (call from `Scheduler.run`)."""
        self.started_at = trio.current_time()

    def _left(self) -> float:
        if self.started_at is None:
            return 0.0
        return self.started_at + self._registry.lost_after - trio.current_time()

    def nodes(self, replicas: Iterable[Replica]) -> frozenset[str]:
        """Nodes holding replicas that have not connected since the start, while the wait lasts."""
        if self._left() <= 0:
            return frozenset()
        return frozenset(r.node_id for r in replicas if self._registry.get(r.node_id) is None)

    def notes(self, replicas: Iterable[Replica], nodes: frozenset[str]) -> dict[str, str]:
        """service id -> why its replicas wait, for the deployments with replicas on `nodes`."""
        if not nodes:
            return {}
        waiting: dict[str, set[str]] = {}
        for r in replicas:
            if r.node_id in nodes:
                waiting.setdefault(r.service_id, set()).add(self._names.get(r.node_id, r.node_id))
        left = max(0.0, self._left())
        return {s: f"waiting up to {left:.0f} s for node {', '.join(sorted(n))} to reconnect after a "
                   f"control plane restart" for s, n in waiting.items()}
