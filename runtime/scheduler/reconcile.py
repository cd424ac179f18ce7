"""Desired state -> placements: the scheduler's reconcile step, as a pure function.

Each deployment wants N replicas of one service version. Every round compares
that with the replicas that exist and returns the next set of replicas:

- a replica on a node that is not ready is moved: same replica id, a new node,
  `attempt` + 1, so a late report from the old node (attempt too low) is ignored;
- missing replicas are placed (see placement.choose_nodes), extra ones dropped;
- a version change rolls one replica at a time: a replica of the new version is
  added, and an old one is dropped only once a new one is ready (a service with a
  declared port and no spare node stops one old replica first: its port is the room);
- a replica whose node has not reconnected since the plane started stays where it
  is while that node may still come back (`reconnecting`);
- each placed replica that uses a GPU is given one by index (placement.pick_gpus).

Nothing here talks to a node; the caller turns the result into per-node Assign
messages and persists it.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from packer.manifest import Resources
from runtime.scheduler.placement import (
    NodeCapacity,
    PlacementError,
    choose_nodes,
    misfit,
    pick_gpus,
    reserve,
)

TRACKS = ("stable", "latest")


@dataclass(frozen=True)
class Deployment:
    """What the operator asked for."""

    service_id: str
    version: str
    replicas: int
    resources: Resources = Resources()
    models: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    port: int | None = None  # service.json `port`: the worker listens there, one per node
    track: str = ""  # "" (pinned to `version`), or a hub channel it follows: one of TRACKS


@dataclass(frozen=True)
class Replica:
    """One placed instance of a deployment; `state` is the last state its node reported.

    `gpus` are the indexes of the node's GPUs the replica's worker may see.
    """

    replica_id: str
    service_id: str
    version: str
    node_id: str
    attempt: int = 1
    state: str = "pending"
    gpus: tuple[int, ...] = ()


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
    *,
    reconnecting: Collection[str] = (),
) -> Plan:
    """One reconcile round; deterministic for the same inputs.

    `nodes` are the ready nodes (with the ports found busy on them);
    `resources_of[(service, version)]` gives the resources of versions still running
    during an upgrade (default: the deployment's own). Replicas on `reconnecting`
    nodes (not ready, but not given up on yet) stay where they are.
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
            capacity[r.node_id] = reserve(capacity[r.node_id], need, gpus=r.gpus, port=wanted[r.service_id].port,
                                          holder=f"{r.service_id} {r.replica_id}")
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
            if r.node_id in reconnecting or (
                    node is not None and (not dep.nodes or node.node_id in dep.nodes or node.name in dep.nodes)
                    and (dep.port is None or dep.port not in node.busy_ports)):
                moved.append(r)
                continue
            try:
                (node_id,) = choose_nodes(dep.resources, 1, list(capacity.values()), port=dep.port,
                                          replicas_on=_count(moved + result), only=dep.nodes or None)
            except PlacementError as exc:
                unplaced[dep.service_id] = str(exc)
                moved.append(r)  # stays assigned to the lost node until a node fits
                continue
            gpus = pick_gpus(capacity[node_id], dep.resources)
            capacity[node_id] = reserve(capacity[node_id], dep.resources, gpus=gpus, port=dep.port,
                                        holder=f"{dep.service_id} {r.replica_id}")
            moved.append(replace(r, node_id=node_id, attempt=r.attempt + 1, state="pending", gpus=gpus))
        current = moved

        # Scale down: drop the newest extra replicas (highest ids last).
        if len(current) > dep.replicas:
            current = sorted(current, key=lambda r: _id_order(r.replica_id))[: dep.replicas]

        # Scale up or roll: during an upgrade, surge by one replica at a time.
        ready_new = sum(1 for r in current if r.state == "ready")
        missing = dep.replicas - len(current)
        if old:
            missing = min(missing, 1 if len(current) == ready_new else 0)
        retire: Replica | None = None
        if missing > 0:
            try:
                targets = choose_nodes(dep.resources, missing, list(capacity.values()), port=dep.port,
                                       replicas_on=_count(current + old), only=dep.nodes or None)
            except PlacementError as exc:
                unplaced[dep.service_id] = str(exc)
                targets = exc.chosen  # place those that fit
                # A declared port leaves no room to surge beside the old replicas: retire one first.
                retire = _room_maker(dep, old, capacity)
            for node_id in targets:
                replica_id = next(fresh_id)
                gpus = pick_gpus(capacity[node_id], dep.resources)
                capacity[node_id] = reserve(capacity[node_id], dep.resources, gpus=gpus, port=dep.port,
                                            holder=f"{dep.service_id} {replica_id}")
                current.append(Replica(replica_id, dep.service_id, dep.version, node_id, gpus=gpus))

        # Retire old-version replicas as new ones become ready (never below the desired count).
        if retire is not None:
            old = [r for r in old if r is not retire]
        surplus = len(old) + ready_new - dep.replicas
        old_sorted = sorted(old, key=lambda r: (r.state == "ready", _id_order(r.replica_id)))
        old_kept = old_sorted[max(surplus, 0):] if surplus > 0 else old_sorted
        result.extend(current)
        result.extend(old_kept)

    result.sort(key=lambda r: (r.service_id, _id_order(r.replica_id)))
    return Plan(replicas=tuple(result), unplaced=unplaced)


def _room_maker(dep: Deployment, old: Sequence[Replica], capacity: Mapping[str, NodeCapacity]) -> Replica | None:
    """An old-version replica whose port alone keeps a new one off its node, if any (not-ready first)."""
    if dep.port is None:
        return None
    for r in sorted(old, key=lambda r: (r.state == "ready", _id_order(r.replica_id))):
        node = capacity.get(r.node_id)
        if node is None or (dep.nodes and node.node_id not in dep.nodes and node.name not in dep.nodes):
            continue
        freed = replace(node, ports=tuple(p for p in node.ports if p != (dep.port, f"{r.service_id} {r.replica_id}")))
        if misfit(freed, dep.resources, dep.port) is None:
            return r
    return None


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
