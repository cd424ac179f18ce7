"""The worker log tails nodes send, kept per replica with the node and attempt they came from."""

from __future__ import annotations

from collections.abc import Iterable

from runtime.scheduler.reconcile import Replica


class WorkerLogTails:
    """Each replica's last worker log lines, as its node last sent them for one placement."""

    def __init__(self) -> None:
        # replica id: (node id, attempt, its worker log tail as that node last sent it)
        self._tails: dict[str, tuple[str, int, tuple[str, ...]]] = {}

    def note(self, node_id: str, logs: dict[str, tuple[str, ...]], replicas: Iterable[Replica]) -> None:
        """Keep the tails `node_id` sent for replicas placed on it; others' are ignored."""
        placed = {r.replica_id: r for r in replicas if r.node_id == node_id}
        for replica_id, lines in logs.items():
            if (current := placed.get(replica_id)) is not None:
                self._tails[replica_id] = (node_id, current.attempt, tuple(lines))

    def get(self, replica_id: str, replicas: Iterable[Replica]) -> tuple[str, ...]:
        """The tail sent for the replica's current placement; () when none."""
        current = next((r for r in replicas if r.replica_id == replica_id), None)
        kept = self._tails.get(replica_id)
        if current is None or kept is None or kept[:2] != (current.node_id, current.attempt):
            return ()  # gone, or moved elsewhere since: the old node's words are not this attempt's
        return kept[2]

    def keep_only(self, live: set[str]) -> None:
        """Forget the tails of replicas that no longer exist."""
        self._tails = {k: v for k, v in self._tails.items() if k in live}
