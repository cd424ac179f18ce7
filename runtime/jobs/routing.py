"""How the node executor picks among matching nodes: labels a selector matches, what a step
needs in words, consistent_hash keys and highest-random-weight (rendezvous) hashing."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

from runtime.jobs.dispatch import AttemptOrder
from runtime.jobs.model import CommandStep, Resources

if TYPE_CHECKING:
    from runtime.scheduler.registry import NodeRecord


def describe_need(need: Resources) -> str:
    """What a step needs, in words: `2 CPUs, 512 MB of memory, 1 GPU`."""
    def many(n: float, what: str) -> str:
        return f"{n:g} {what}" + ("" if n == 1 else "s")

    parts = [many(need.cpu, "CPU") if need.cpu else "", f"{need.memory_mb} MB of memory" if need.memory_mb else "",
             many(need.gpu, "GPU") if need.gpu else ""]
    return ", ".join(p for p in parts if p)


def routing_key(template: str, order: AttemptOrder) -> str:
    """A consistent_hash key with `{params.NAME}` (and `{job}`, `{step}`) filled in."""
    values = {f"params.{k}": str(v) for k, v in order.params.items()}
    values.update(job=order.job, step=order.step.name)
    return re.sub(r"\{([A-Za-z0-9_.]+)\}", lambda m: values.get(m.group(1), m.group(0)), template)


def rendezvous(key: str, nodes: list[NodeRecord]) -> NodeRecord:
    """The node with the highest hash of (key, node id): the same key lands on the same node while
    it is there, and only the keys of a node that leaves move (highest-random-weight hashing)."""
    return max(nodes, key=lambda n: hashlib.sha256(f"{key}\0{n.node_id}".encode()).digest())


def node_labels(node: NodeRecord) -> dict[str, str]:
    """What a step's selector matches: the node's labels, its `node` name and `node_id`."""
    return {**node.labels, "node": node.name, "node_id": node.node_id}


def matching_nodes(ready: list[NodeRecord], step: CommandStep) -> tuple[list[NodeRecord], str]:
    """The nodes of `ready` (connected) whose labels match the step's selector; else why none."""
    if not ready:
        return [], "no node connected"
    wanted = dict(step.selector)
    matching = [n for n in ready if all(node_labels(n).get(k) == v for k, v in wanted.items())]
    if not matching:
        return [], "no node with labels " + ",".join(f"{k}={v}" for k, v in sorted(wanted.items()))
    return matching, ""


def pick(matching: list[NodeRecord], order: AttemptOrder, turns: dict[tuple[str, str, str], int],
         mine: dict[str, int]) -> tuple[str | None, str]:
    """The node the order's routing strategy picks among `matching` (sorted by name), else why none.

    `turns`: round_robin's last turn per (tenant, job, step), advanced here; `mine`: this plane's
    attempts per node, which least_loaded adds to each node's requests in flight.
    """
    routing = order.routing
    if routing.strategy == "round_robin":
        turn = (order.tenant, order.job, order.step.name)
        turns[turn] = turns.get(turn, -1) + 1
        return matching[turns[turn] % len(matching)].node_id, ""
    if routing.strategy == "consistent_hash":
        return rendezvous(routing_key(routing.key or "", order), matching).node_id, ""
    if routing.strategy == "failover":
        by_name = {n.name: n for n in matching}
        for name in routing.order:
            if name in by_name:
                return by_name[name].node_id, ""
        return None, "none of the failover nodes (" + ", ".join(routing.order) + ") is connected and matching"
    best = min(matching, key=lambda n: (mine.get(n.node_id, 0) + n.outstanding, n.name, n.node_id))
    return best.node_id, ""


def fits(node: NodeRecord, need: Resources, used: list[Resources]) -> bool:
    """Whether `node` has `need` left after what the attempts it runs for this plane reserved
    (`used`), against its declared CPUs, memory and GPUs, as Kubernetes requests are."""
    return (node.hello.cpu_count - sum(u.cpu for u in used) >= need.cpu
            and node.hello.ram_mb - sum(u.memory_mb for u in used) >= need.memory_mb
            and len(node.hello.gpus) - sum(u.gpu for u in used) >= need.gpu)
