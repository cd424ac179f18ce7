"""Node-owned deployments: services a node runs from its own files (`flowctl run DIR`).

A node announces them over its control connection (`local`, its complete set each
time) and the plane answers with a `local_verdict`. An accepted one is routed to like
any deployment (its one replica is `local:<service_id>` on that node) but the plane
never places, moves or restarts it: it lives exactly as long as the node's connection.
It is dropped when that connection ends, when the node is lost (silent for the
lost-node timeout) and when the node withdraws it.

The node is not trusted: every name and size is checked here, and a deployment whose
service id or model id is already served (by a plane-managed deployment or by another
node's own) is refused with the reason, first come first served.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from packer.manifest import MODEL_ID_PATTERN, SERVICE_ID_PATTERN
from packer.semver import is_version
from runtime.control.messages import Local, LocalDeployment, LocalVerdict
from runtime.scheduler.reconcile import Deployment, Replica
from runtime.scheduler.registry import NodeRecord, NodeRegistry, NodeState

MAX_PER_NODE = 16
MAX_MODELS = 64
MAX_CONCURRENCY = 4096
MAX_DETAIL = 500
REPLICA_PREFIX = "local:"
_SERVICE_ID = re.compile(SERVICE_ID_PATTERN)
_MODEL_ID = re.compile(MODEL_ID_PATTERN)


def replica_id(service_id: str) -> str:
    """The tunnel's replica id of a node-owned deployment."""
    return REPLICA_PREFIX + service_id


@dataclass(frozen=True)
class Owned:
    """One accepted node-owned deployment and the connection that announced it."""

    node_id: str
    node_name: str
    epoch: int
    deployment: LocalDeployment

    @property
    def replica(self) -> Replica:
        """Its one replica, in the shape routes carry."""
        d = self.deployment
        return Replica(replica_id(d.service_id), d.service_id, d.version, self.node_id, 1, d.state)


class LocalDeployments:
    """The accepted node-owned deployments of one plane (see the module docstring).

    `plane_deployments()` gives the plane-managed deployments, for conflicts both ways.
    """

    def __init__(self, registry: NodeRegistry, plane_deployments: Callable[[], Iterable[Deployment]]):
        self._plane = plane_deployments
        self._owned: dict[str, Owned] = {}  # by service id
        registry.subscribe(self._on_node)

    def announce(self, node_id: str, node_name: str, epoch: int, local: Local) -> LocalVerdict:
        """Replace `node_id`'s set with what `local` lists and the plane accepts; say why not."""
        self.drop(node_id)
        accepted: list[str] = []
        refused: dict[str, str] = {}
        for index, dep in enumerate(local.deployments):
            key = dep.service_id if _SERVICE_ID.match(dep.service_id) else f"#{index}"
            if index >= MAX_PER_NODE:
                refused[key] = f"a node may run at most {MAX_PER_NODE} deployments of its own"
                continue
            problem = _invalid(dep) or self._conflict(node_id, dep)
            if problem:
                refused[key] = problem
                continue
            clean = LocalDeployment(dep.service_id, dep.version, dep.state, dep.models,
                                    dep.max_concurrency, _printable(dep.detail)[:MAX_DETAIL])
            self._owned[dep.service_id] = Owned(node_id, node_name, epoch, clean)
            accepted.append(dep.service_id)
        return LocalVerdict(accepted=tuple(accepted), refused=refused)

    def drop(self, node_id: str, epoch: int | None = None) -> None:
        """Forget a node's deployments (only those its connection `epoch` announced, if given)."""
        for service_id, owned in list(self._owned.items()):
            if owned.node_id == node_id and (epoch is None or owned.epoch == epoch):
                del self._owned[service_id]

    def of(self, node_id: str) -> list[Owned]:
        """A node's accepted deployments."""
        return [o for o in self._owned.values() if o.node_id == node_id]

    def replicas(self, model_id: str) -> list[tuple[Replica, int]]:
        """(replica, max_concurrency) of every node-owned deployment that lists `model_id`."""
        return [(o.replica, o.deployment.max_concurrency) for o in self._owned.values()
                if model_id in o.deployment.models]

    def model_names(self) -> set[str]:
        """Every model a node-owned deployment lists."""
        return {m for o in self._owned.values() for m in o.deployment.models}

    def deploys(self, model_id: str) -> bool:
        """Whether a node-owned deployment lists `model_id` (ready or not)."""
        return any(model_id in o.deployment.models for o in self._owned.values())

    def conflicts(self, dep: Deployment) -> list[str]:
        """Why a plane-managed deployment `dep` would collide with a node-owned one."""
        found = []
        for o in self._owned.values():
            if o.deployment.service_id == dep.service_id:
                found.append(f"service {dep.service_id!r} is run by node {o.node_name!r} (flowctl run)")
            found += [f"model {m!r} is already served by node {o.node_name!r} (flowctl run)"
                      for m in dep.models if m in o.deployment.models]
        return found

    def status(self, serving: Callable[[Replica], bool]) -> list[dict]:
        """Rows for `flowctl status`, in the plane-managed deployments' shape plus `owner`."""
        rows = []
        for o in sorted(self._owned.values(), key=lambda o: o.deployment.service_id):
            d, r = o.deployment, o.replica
            state = "lost" if d.state == "ready" and not serving(r) else d.state
            rows.append({
                "service": d.service_id, "version": d.version, "desired": 1, "ready": int(serving(r)),
                "models": list(d.models), "unplaced": None, "owner": o.node_name,
                "replicas": [{"replica_id": r.replica_id, "version": d.version, "node_id": o.node_id,
                              "attempt": 1, "state": state, "detail": d.detail}],
            })
        return rows

    def _conflict(self, node_id: str, dep: LocalDeployment) -> str:
        for plane in self._plane():
            if plane.service_id == dep.service_id:
                return f"service {dep.service_id!r} is deployed by the control plane"
            for m in dep.models:
                if m in plane.models:
                    return f"model {m!r} is already served by service {plane.service_id!r}"
        for o in self._owned.values():
            who = "this node" if o.node_id == node_id else f"node {o.node_name!r}"
            if o.deployment.service_id == dep.service_id:
                return f"service {dep.service_id!r} is already run by {who}"
            for m in dep.models:
                if m in o.deployment.models:
                    return f"model {m!r} is already served by {who} (service {o.deployment.service_id!r})"
        return ""

    def _on_node(self, node: NodeRecord, before: NodeState) -> None:
        # A lost node's connection may be half-open for a long time: its services go now.
        if node.state in (NodeState.LOST, NodeState.GONE):
            self.drop(node.node_id)


def _invalid(dep: LocalDeployment) -> str:
    """What is wrong with an announced deployment's names and sizes, or ""."""
    if not _SERVICE_ID.match(dep.service_id):
        return f"service id {dep.service_id[:80]!r} is not a valid service id"
    if not is_version(dep.version):
        return f"version {dep.version[:80]!r} of {dep.service_id!r} is not SemVer"
    if not dep.models:
        return f"{dep.service_id!r} lists no models"
    if len(dep.models) > MAX_MODELS:
        return f"{dep.service_id!r} lists {len(dep.models)} models; at most {MAX_MODELS}"
    for m in dep.models:
        if not _MODEL_ID.match(m):
            return f"model id {m[:80]!r} of {dep.service_id!r} is not a valid model id"
    if len(set(dep.models)) != len(dep.models):
        return f"{dep.service_id!r} lists a model twice"
    if not 1 <= dep.max_concurrency <= MAX_CONCURRENCY:
        return f"max_concurrency {dep.max_concurrency} of {dep.service_id!r} is not in 1..{MAX_CONCURRENCY}"
    return ""


def _printable(text: str) -> str:
    # The detail reaches terminals (`flowctl status`): no escape sequences from a node.
    return "".join(c if c == " " or unicodedata.category(c)[0] not in "CZ" else " " for c in text)
