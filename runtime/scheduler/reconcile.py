"""Desired state -> placements: the scheduler's reconcile step, as a pure function.

Each deployment wants N replicas of one service version. Every round compares
that with the replicas that exist and returns the next set of replicas:

- a replica on a node that is not ready is moved: same replica id, a new node,
  `attempt` + 1, so a late report from the old node (attempt too low) is ignored;
- missing replicas are placed (see placement.choose_nodes), extra ones dropped;
- a version change rolls one replica at a time: a replica of the new version is
  added, and an old one is dropped only once a new one is ready.

Nothing here talks to a node; the caller turns the result into per-node Assign
messages and persists it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from packer.manifest import Resources
from runtime.scheduler.placement import NodeCapacity, PlacementError, choose_nodes, reserve


@dataclass(frozen=True)
class Deployment:
    """What the operator asked for."""

    service_id: str
    version: str
    replicas: int
    resources: Resources = Resources()
    models: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Replica:
    """One placed instance of a deployment; `state` is the last state its node reported."""

    replica_id: str
    service_id: str
    version: str
    node_id: str
    attempt: int = 1
    state: str = "pending"


@dataclass(frozen=True)
class Plan:
    """The result of one round: the replicas to keep, and what could not be placed."""

    replicas: tuple[Replica, ...]
    unplaced: Mapping[str, str]


def _ids(existing: Iterable[Replica]) -> Iterator[str]:
    used = {r.replica_id for r in existing}
    for n in itertools.count(1):
        if f"r{n}" not in used:
            yield f"r{n}"


def reconcile(
    deployments: Sequence[Deployment],
    replicas: Sequence[Replica],
    nodes: Sequence[NodeCapacity],
    resources_of: Mapping[tuple[str, str], Resources] | None = None,
) -> Plan:
    """One reconcile round; deterministic for the same inputs.

    `nodes` are the ready nodes; `resources_of[(service, version)]` gives the
    resources of versions still running during an upgrade (default: the
    deployment's own).
    """
    resources_of = dict(resources_of or {})
    wanted = {d.service_id: d for d in deployments}
    ready_nodes = {n.node_id: n for n in nodes}
    fresh_id = _ids(replicas)
    kept: list[Replica] = []
    unplaced: dict[str, str] = {}

    # Replicas of removed deployments go; the rest reserve capacity where they sit.
    capacity = dict(ready_nodes)
    for r in replicas:
        if r.service_id not in wanted:
            continue
        if r.node_id in capacity:
            need = resources_of.get((r.service_id, r.version), wanted[r.service_id].resources)
            capacity[r.node_id] = reserve(capacity[r.node_id], need)
        kept.append(r)

    result: list[Replica] = []
    for dep in sorted(wanted.values(), key=lambda d: d.service_id):
        mine = [r for r in kept if r.service_id == dep.service_id]
        current = [r for r in mine if r.version == dep.version]
        old = [r for r in mine if r.version != dep.version]

        # Move replicas whose node is gone (or no longer among the pinned ones); keep the id, bump the attempt.
        moved: list[Replica] = []
        for r in current:
            node = ready_nodes.get(r.node_id)
            if node is not None and (not dep.nodes or node.node_id in dep.nodes or node.name in dep.nodes):
                moved.append(r)
                continue
            try:
                (node_id,) = choose_nodes(dep.resources, 1, list(capacity.values()),
                                          replicas_on=_count(moved + result), only=dep.nodes or None)
            except PlacementError as exc:
                unplaced[dep.service_id] = str(exc)
                moved.append(r)  # stays assigned to the lost node until a node fits
                continue
            capacity[node_id] = reserve(capacity[node_id], dep.resources)
            moved.append(replace(r, node_id=node_id, attempt=r.attempt + 1, state="pending"))
        current = moved

        # Scale down: drop the newest extra replicas (highest ids last).
        if len(current) > dep.replicas:
            current = sorted(current, key=lambda r: _id_order(r.replica_id))[: dep.replicas]

        # Scale up or roll: during an upgrade, surge by one replica at a time.
        ready_new = sum(1 for r in current if r.state == "ready")
        missing = dep.replicas - len(current)
        if old:
            missing = min(missing, 1 if len(current) == ready_new else 0)
        if missing > 0:
            try:
                targets = choose_nodes(dep.resources, missing, list(capacity.values()),
                                       replicas_on=_count(current + old), only=dep.nodes or None)
            except PlacementError as exc:
                unplaced[dep.service_id] = str(exc)
                targets = []
            for node_id in targets:
                capacity[node_id] = reserve(capacity[node_id], dep.resources)
                current.append(Replica(next(fresh_id), dep.service_id, dep.version, node_id))

        # Retire old-version replicas as new ones become ready (never below the desired count).
        surplus = len(old) + ready_new - dep.replicas
        old_sorted = sorted(old, key=lambda r: (r.state == "ready", _id_order(r.replica_id)))
        old_kept = old_sorted[max(surplus, 0):] if surplus > 0 else old_sorted
        result.extend(current)
        result.extend(old_kept)

    result.sort(key=lambda r: (r.service_id, _id_order(r.replica_id)))
    return Plan(replicas=tuple(result), unplaced=unplaced)


def _count(replicas: Iterable[Replica]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in replicas:
        counts[r.node_id] = counts.get(r.node_id, 0) + 1
    return counts


def _id_order(replica_id: str) -> tuple[int, str]:
    digits = replica_id.lstrip("r")
    return (int(digits), replica_id) if digits.isdigit() else (2**31, replica_id)


def assignments_by_node(replicas: Iterable[Replica]) -> dict[str, list[Replica]]:
    """Group replicas by the node that should run them."""
    grouped: dict[str, list[Replica]] = {}
    for r in replicas:
        grouped.setdefault(r.node_id, []).append(r)
    return grouped


def model_conflicts(new: Deployment, existing: Iterable[Deployment]) -> list[str]:
    """Model ids that `new` claims and another service already serves."""
    taken = {m: d.service_id for d in existing if d.service_id != new.service_id for m in d.models}
    return [f"model {m!r} is already served by service {taken[m]!r}" for m in new.models if m in taken]
