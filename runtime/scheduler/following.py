"""What a plane that does not lead the scheduler keeps: the shared state, re-read, and its own reports.

Several planes on one state (runtime/scheduler/leadership.py): the leader writes deployments'
replicas; every plane re-reads them, and deployments written through any plane, every
`refresh_s`. A follower never trusts the stored replica state for routing: a replica is ready
for it only once a node link of its own reported so (nodes report on every link), like a
restarted plane. A report may come before the follower read the placement it belongs to: it is
kept aside (`_unmatched`) and applied once the placement is read.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import trio

from runtime.control.messages import ReplicaReport

if TYPE_CHECKING:
    from runtime.scheduler.reconcile import Deployment, Replica
    from runtime.scheduler.store import ClusterStore


class Following:
    """The Scheduler's refresh from the shared store (a mixin; the attributes are the Scheduler's)."""

    store: ClusterStore
    _deployments: dict[str, Deployment]
    _replicas: tuple[Replica, ...]
    _reports: dict[str, ReplicaReport]
    _unmatched: dict[str, tuple[str, ReplicaReport]]
    _sent: dict
    _unplaced: dict[str, str]
    _lock: trio.Lock

    def wake(self) -> None:
        """Ask for a reconcile round (the Scheduler's)."""
        raise NotImplementedError

    async def refresh(self, *, leading: bool) -> None:
        """Re-read what other planes may have written: deployments, and unless `leading` the replicas.

        A follower keeps the state its own node links report for each replica (pending until then).
        """
        deployments, replicas = await trio.to_thread.run_sync(
            lambda: (self.store.deployments(), () if leading else self.store.replicas()))
        async with self._lock:
            found = {d.service_id: d for d in deployments}
            if found != self._deployments:
                self._deployments = found
                self.wake()
            if leading:
                return
            placed = {r.replica_id: r.node_id for r in self._replicas}
            known = {**{k: (placed[k], v) for k, v in self._reports.items() if k in placed}, **self._unmatched}
            adopted = []
            for r in replicas:
                node_id, said = known.get(r.replica_id, ("", None))
                fits = said is not None and node_id == r.node_id and said.attempt == r.attempt
                if fits and said is not None:
                    self._reports[r.replica_id] = said
                    self._unmatched.pop(r.replica_id, None)
                adopted.append(replace(r, state=said.state if fits and said is not None else "pending"))
            self._replicas = tuple(adopted)
            live = {r.replica_id for r in adopted}
            self._reports = {k: v for k, v in self._reports.items() if k in live}

    def stepped_down(self) -> None:
        """This plane stopped leading: what it told nodes is no longer its to keep."""
        self._sent.clear()
        self._unplaced.clear()


