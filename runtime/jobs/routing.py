"""How the node executor picks among matching nodes: labels a selector matches, what a step
needs in words, consistent_hash keys and highest-random-weight (rendezvous) hashing."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

from runtime.jobs.dispatch import AttemptOrder
from runtime.jobs.model import Resources

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
