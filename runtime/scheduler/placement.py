"""Where replicas go: nodes whose free RAM, GPU VRAM and declared port fit, spread out.

Pure functions over snapshots, so the policy is tested without a cluster.
Capacity is what a node declared in its hello minus what the replicas already
placed on it reserve; a node's momentary free memory is not used, since a worker
that is still loading its model would make it look emptier than it is.

GPUs are placed one per replica, by index: of the GPUs with enough free VRAM the
one with the most free VRAM is taken (lowest index on a tie), so replicas spread
over a node's GPUs before two share one. A declared port (service.json `port`) is
a per-node resource: one replica per node, and never a node where the port was
found in use by something else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from packer.manifest import Resources
from runtime.errors import FlowError


class PlacementError(FlowError):
    """No ready node can take a replica; the message says what was missing.

    `chosen`: the node ids picked for the replicas that did fit, before the one that did not.
    """

    def __init__(self, message: str, chosen: Sequence[str] = ()):
        super().__init__(message)
        self.chosen = list(chosen)


@dataclass(frozen=True)
class NodeCapacity:
    """A placement snapshot of one ready node.

    `gpu_vram_mb[i]` is the VRAM of the GPU with index `gpu_index[i]` (default: i);
    `gpu_reserved_mb[i]` what placed replicas reserve on it. `ports` maps a declared
    port to the replica holding it; `busy_ports` were found in use by another process.
    """

    node_id: str
    name: str
    ram_mb: int
    gpu_vram_mb: tuple[int, ...] = ()
    reserved_ram_mb: int = 0
    gpu_reserved_mb: tuple[int, ...] = ()
    gpu_index: tuple[int, ...] = ()
    ports: tuple[tuple[int, str], ...] = ()
    busy_ports: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        n = len(self.gpu_vram_mb)
        if len(self.gpu_reserved_mb) != n:
            object.__setattr__(self, "gpu_reserved_mb", (0,) * n)
        if len(self.gpu_index) != n:
            object.__setattr__(self, "gpu_index", tuple(range(n)))

    @property
    def free_ram_mb(self) -> int:
        """Declared RAM minus what placed replicas reserve."""
        return self.ram_mb - self.reserved_ram_mb

    def gpu_free_mb(self) -> dict[int, int]:
        """GPU index -> its VRAM minus what placed replicas reserve."""
        return {i: vram - used for i, vram, used in zip(self.gpu_index, self.gpu_vram_mb, self.gpu_reserved_mb, strict=True)}

    @property
    def free_vram_mb(self) -> int:
        """The free VRAM of the emptiest GPU (a replica uses one GPU)."""
        return max(self.gpu_free_mb().values(), default=0)

    def port_holder(self, port: int) -> str | None:
        """Which replica holds `port` on this node, or None."""
        return next((holder for p, holder in self.ports if p == port), None)


def misfit(node: NodeCapacity, need: Resources, port: int | None = None) -> str | None:
    """Why `need` does not fit on `node`, or None if it does."""
    if port is not None and port in node.busy_ports:
        return f"has port {port} in use by another process"
    if port is not None and (holder := node.port_holder(port)) is not None:
        return f"has port {port} taken by {holder}"
    if need.gpu == "required" and not node.gpu_vram_mb:
        return "has no GPU"
    if node.free_ram_mb < need.ram_mb:
        return f"has {node.free_ram_mb} MB RAM free, needs {need.ram_mb}"
    if need.gpu == "required" and node.free_vram_mb < need.vram_mb:
        return f"has {node.free_vram_mb} MB VRAM free, needs {need.vram_mb}"
    return None


def pick_gpus(node: NodeCapacity, need: Resources) -> tuple[int, ...]:
    """The GPU index a new replica of `need` gets on `node`: () for none.

    `gpu: required` and `optional` take the GPU with the most free VRAM among those
    with enough (spread); `optional` runs without one when none has enough.
    """
    if need.gpu not in ("required", "optional"):
        return ()
    fitting = [(free, i) for i, free in node.gpu_free_mb().items() if free >= need.vram_mb]
    if not fitting:
        return ()
    _, index = max(fitting, key=lambda f: (f[0], -f[1]))
    return (index,)


def reserve(node: NodeCapacity, need: Resources, *, gpus: Sequence[int] | None = None,
            port: int | None = None, holder: str = "a replica") -> NodeCapacity:
    """The node's capacity after one more replica of `need` is placed on it.

    `gpus` are the indexes the replica uses (None: pick them as a new replica would);
    `port` its declared port, held by `holder` (named in placement errors).
    """
    if gpus is None:
        gpus = pick_gpus(node, need)
    used = [r + (need.vram_mb if i in gpus else 0) for i, r in zip(node.gpu_index, node.gpu_reserved_mb, strict=True)]
    ports = node.ports + ((port, holder),) if port is not None else node.ports
    return replace(node, reserved_ram_mb=node.reserved_ram_mb + need.ram_mb, gpu_reserved_mb=tuple(used),
                   ports=ports)


def choose_nodes(
    need: Resources,
    count: int,
    nodes: Sequence[NodeCapacity],
    *,
    replicas_on: Mapping[str, int] | None = None,
    only: Iterable[str] | None = None,
    port: int | None = None,
) -> list[str]:
    """Pick `count` node ids for new replicas, one at a time.

    Each pick is the fitting node with the fewest replicas of this deployment
    (spreading), then, for `gpu: optional`, one with a GPU that has room, then the most free
    RAM, then the name (so the choice is deterministic). A node may take several
    replicas when there are fewer nodes than replicas, unless they declare a
    `port`. `only` restricts the candidates by node id or name (`flowctl deploy --node`).

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
        fitting = [n for n in pool.values() if misfit(n, need, port) is None]
        if not fitting:
            reasons = "; ".join(f"{n.name} {misfit(n, need, port)}"
                                for n in sorted(pool.values(), key=lambda n: n.name))
            placed = f" after placing {len(chosen)} of {count}" if chosen else ""
            raise PlacementError(f"no node fits a replica{placed}: {reasons}", chosen)
        best = min(fitting, key=lambda n: (
            counts.get(n.node_id, 0),
            0 if need.gpu != "optional" or pick_gpus(n, need) else 1,
            -n.free_ram_mb,
            n.name,
        ))
        chosen.append(best.node_id)
        counts[best.node_id] = counts.get(best.node_id, 0) + 1
        pool[best.node_id] = reserve(best, need, port=port, holder="a new replica")
    return chosen
