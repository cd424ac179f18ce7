"""Where replicas go: nodes whose free RAM/VRAM fits the manifest's resources, spread out.

Pure functions over snapshots, so the policy is tested without a cluster.
Capacity is what a node declared in its hello minus what the replicas already
placed on it reserve; a node's momentary free memory is not used, since a worker
that is still loading its model would make it look emptier than it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from packer.manifest import Resources
from runtime.errors import FlowError


class PlacementError(FlowError):
    """No ready node can take a replica; the message says what was missing."""


@dataclass(frozen=True)
class NodeCapacity:
    """A placement snapshot of one ready node."""

    node_id: str
    name: str
    ram_mb: int
    gpu_vram_mb: tuple[int, ...] = ()
    reserved_ram_mb: int = 0
    reserved_vram_mb: int = 0

    @property
    def free_ram_mb(self) -> int:
        """Declared RAM minus what placed replicas reserve."""
        return self.ram_mb - self.reserved_ram_mb

    @property
    def free_vram_mb(self) -> int:
        """Largest GPU's VRAM minus what placed replicas reserve (one GPU per replica)."""
        return (max(self.gpu_vram_mb) if self.gpu_vram_mb else 0) - self.reserved_vram_mb


def _misfit(node: NodeCapacity, need: Resources) -> str | None:
    """Why `need` does not fit on `node`, or None if it does."""
    if need.gpu == "required" and not node.gpu_vram_mb:
        return "has no GPU"
    if node.free_ram_mb < need.ram_mb:
        return f"has {node.free_ram_mb} MB RAM free, needs {need.ram_mb}"
    if need.gpu == "required" and node.free_vram_mb < need.vram_mb:
        return f"has {node.free_vram_mb} MB VRAM free, needs {need.vram_mb}"
    return None


def reserve(node: NodeCapacity, need: Resources) -> NodeCapacity:
    """The node's capacity after one more replica of `need` is placed on it."""
    uses_gpu = need.gpu == "required" or (need.gpu == "optional" and bool(node.gpu_vram_mb))
    return NodeCapacity(
        node_id=node.node_id, name=node.name, ram_mb=node.ram_mb, gpu_vram_mb=node.gpu_vram_mb,
        reserved_ram_mb=node.reserved_ram_mb + need.ram_mb,
        reserved_vram_mb=node.reserved_vram_mb + (need.vram_mb if uses_gpu else 0),
    )


def choose_nodes(
    need: Resources,
    count: int,
    nodes: Sequence[NodeCapacity],
    *,
    replicas_on: Mapping[str, int] | None = None,
    only: Iterable[str] | None = None,
) -> list[str]:
    """Pick `count` node ids for new replicas, one at a time.

    Each pick is the fitting node with the fewest replicas of this deployment
    (spreading), then, for `gpu: optional`, one with a GPU, then the most free
    RAM, then the name (so the choice is deterministic). A node may take several
    replicas when there are fewer nodes than replicas. `only` restricts the
    candidates by node id or name (`flowctl deploy --node`).

    Error handling: PlacementError names every candidate and why it does not fit.
    """
    if count <= 0:
        return []
    wanted = set(only) if only is not None else None
    pool = {n.node_id: n for n in nodes if wanted is None or n.node_id in wanted or n.name in wanted}
    if not pool:
        target = f" named {', '.join(sorted(wanted))}" if wanted else ""
        raise PlacementError(f"no ready node{target} to place a replica on")
    counts = dict(replicas_on or {})
    chosen: list[str] = []
    for _ in range(count):
        fitting = [n for n in pool.values() if _misfit(n, need) is None]
        if not fitting:
            reasons = "; ".join(f"{n.name} {_misfit(n, need)}" for n in sorted(pool.values(), key=lambda n: n.name))
            placed = f" after placing {len(chosen)} of {count}" if chosen else ""
            raise PlacementError(f"no node fits a replica{placed}: {reasons}")
        best = min(fitting, key=lambda n: (
            counts.get(n.node_id, 0),
            0 if need.gpu != "optional" or n.gpu_vram_mb else 1,
            -n.free_ram_mb,
            n.name,
        ))
        chosen.append(best.node_id)
        counts[best.node_id] = counts.get(best.node_id, 0) + 1
        pool[best.node_id] = reserve(best, need)
    return chosen
