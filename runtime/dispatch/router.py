"""Choosing a replica: least outstanding requests, power of two choices among many.

The load of a replica is the gateway's own requests in flight to it (exact and current),
scaled by the replica's max_concurrency so a bigger replica takes a larger share.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from runtime.scheduler.service import Route


class Router:
    """Picks a route for each request and counts what is in flight per replica."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.in_flight: dict[str, int] = {}
        self.by_node: dict[str, int] = {}  # the same requests per node: `flowctl status`'s IN FLIGHT
        self._rng = rng or random.Random()

    def load(self, route: Route) -> float:
        """In-flight requests per unit of concurrency."""
        return self.in_flight.get(route.replica.replica_id, 0) / max(1, route.max_concurrency)

    def pick(self, routes: Sequence[Route], exclude: frozenset[str] = frozenset()) -> Route | None:
        """The least loaded of all (up to 3 candidates) or of two sampled at random; None if none."""
        candidates = [r for r in routes if r.replica.replica_id not in exclude]
        if not candidates:
            return None
        if len(candidates) > 3:
            candidates = self._rng.sample(candidates, 2)
        lowest = min(self.load(r) for r in candidates)
        # Ties broken at random so idle replicas share the load.
        return self._rng.choice([r for r in candidates if self.load(r) == lowest])

    @contextmanager
    def hold(self, route: Route) -> Iterator[None]:
        """Count one request in flight on `route` for the block's duration."""
        rid, node = route.replica.replica_id, route.node_id
        _add(self.in_flight, rid, 1)
        _add(self.by_node, node, 1)
        try:
            yield
        finally:
            _add(self.in_flight, rid, -1)
            _add(self.by_node, node, -1)

    def node_in_flight(self, node_id: str) -> int:
        """Requests in flight to `node_id`'s replicas now (exact, unlike a node's last heartbeat)."""
        return self.by_node.get(node_id, 0)


def _add(counts: dict[str, int], key: str, step: int) -> None:
    """Count up or down; a count that reaches 0 is removed, so the maps hold only what is in flight."""
    left = counts.get(key, 0) + step
    if left:
        counts[key] = left
    else:
        counts.pop(key, None)
