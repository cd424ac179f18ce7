"""The scheduler: deployments, the reconcile loop, and what each node is told to run.

One `Scheduler` per control plane. `run()` keeps the cluster converging: it
sweeps for lost nodes and, whenever something changed (a deploy, a node joining
or going silent, a replica reporting), recomputes placements with
`reconcile()`, persists them and sends each connected node its complete desired
state. Node connections themselves are served by `runtime.scheduler.node_connection`.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import trio

from hub_store import sql
from packer.manifest import Manifest
from runtime.control.messages import REPLACED, REVOKED, Assign, Assignment, Gpu, ReplicaReport
from runtime.scheduler.deploy_errors import DeployConflict, DeployError, NotDeployed, UnknownService
from runtime.scheduler.following import Following
from runtime.scheduler.leadership import Leadership, LostLeadership
from runtime.scheduler.links import AssignSender, NodeLink, Route  # noqa: F401 - imported from here too
from runtime.scheduler.local_deployments import LocalDeployments
from runtime.scheduler.placement import NodeCapacity
from runtime.scheduler.reconcile import TRACKS, Deployment, Replica, model_conflicts, reconcile
from runtime.scheduler.reconnect import ReconnectWait
from runtime.scheduler.registry import DEFAULT_LOST_AFTER, NodeRecord, NodeRegistry, NodeState
from runtime.scheduler.store import ClusterStore
from runtime.scheduler.tracking import DEFAULT_TRACK_INTERVAL, ChannelLookup, ChannelTracker
from runtime.scheduler.worker_logs import WorkerLogTails
from runtime.tunnel import Mux

RECONCILE_TICK = 1.0
BUSY_PORT_TTL = 300.0  # how long a node is avoided for a port found in use there
DEFAULT_HEARTBEAT_INTERVAL = 5.0

ManifestResolver = Callable[[str, str], Awaitable[Manifest]]
REPLACED_REASON = "replaced by a newer connection of this node"


def gpu_indexes(gpus: tuple[Gpu, ...]) -> tuple[int, ...]:
    """Each GPU's index as the node declared it (its position when it declared none)."""
    return tuple(g.index if g.index >= 0 else i for i, g in enumerate(gpus))


class Scheduler(Following):
    """Deployments and placements for one cluster (see the module docstring)."""

    def __init__(
        self,
        store: ClusterStore,
        resolve_manifest: ManifestResolver,
        *,
        hub_url: str,
        lost_after: float = DEFAULT_LOST_AFTER,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        channel_lookup: ChannelLookup | None = None,
        track_interval: float = DEFAULT_TRACK_INTERVAL,
    ):
        self.store = store
        self.hub_url = hub_url
        self.heartbeat_interval = heartbeat_interval
        self.registry = NodeRegistry(lost_after=lost_after)
        # Requests in flight per node as the plane's dispatcher counts them (exact and current);
        # without one (no gateway role) the node's last heartbeat says.
        self.in_flight: Callable[[str], int] | None = None
        self.registry.subscribe(lambda node, before: self.wake())
        self._resolve = resolve_manifest
        self._deployments = {d.service_id: d for d in store.deployments()}
        self.local = LocalDeployments(self.registry, lambda: self._deployments.values())  # flowctl run
        # After a restart nothing is known to be ready until its node says so again (in its hello).
        self._replicas: tuple[Replica, ...] = tuple(replace(r, state="pending") for r in store.replicas())
        self._reports: dict[str, ReplicaReport] = {}
        self._worker_logs = WorkerLogTails()
        self._links: dict[str, NodeLink] = {}
        self._revoked_tokens: set[str] = set()
        self._sent: dict[str, tuple[Assignment, ...]] = {}
        self._generation = itertools.count(1)
        self._unplaced: dict[str, str] = {}
        self._changed = trio.Event()
        self._lock = trio.Lock()
        self._reconnect = ReconnectWait(self.registry, {node_id: name for node_id, name, _ in store.known_nodes()})
        self._busy_ports: dict[str, dict[int, float]] = {}  # node id -> port -> avoided until
        if channel_lookup is None:
            # Imported here: the resolver imports this module's errors. Tracked deployments ask the
            # hub nodes download from (the plane may set hub_url later).
            from runtime.scheduler.resolver import hub_channel_resolver

            channel_lookup = hub_channel_resolver(lambda: self.hub_url)
        self.tracker = ChannelTracker(self, channel_lookup, interval=track_interval)
        # Several planes on one state: only the lease holder reconciles (runtime/scheduler/leadership.py).
        self.leadership: Leadership | None = None
        self._unmatched: dict[str, tuple[str, ReplicaReport]] = {}  # a follower's reports of replicas it has not read yet

    @classmethod
    def open(cls, data_dir: Path | sql.State, resolve_manifest: ManifestResolver, **kwargs) -> Scheduler:
        """A scheduler on the state kept in `data_dir/cluster.db`."""
        store = ClusterStore(data_dir if isinstance(data_dir, sql.State) else data_dir / "cluster.db")
        return cls(store, resolve_manifest, **kwargs)

    # -- operator API ------------------------------------------------------------------------

    async def deploy(self, service_id: str, version: str = "latest", *, replicas: int | None = None,
                     nodes: tuple[str, ...] | None = None, track: str | None = None) -> Deployment:
        """Create or upgrade a deployment; the version is resolved against the hub.

        `replicas` None keeps an existing deployment's count (a new one gets 1), so an
        upgrade after `flowctl scale` does not shrink the deployment. Likewise `nodes`
        None keeps an existing deployment's pin (a new one may go anywhere); `()` unpins.
        `track` "stable"/"latest" follows that hub channel (with version "latest": its
        newest version now), "" pins to the version; None keeps an existing deployment's
        channel when no version is named, and pins when one is.
        """
        existing = self._deployments.get(service_id)
        if replicas is None:
            replicas = existing.replicas if existing is not None else 1
        if nodes is None:
            nodes = existing.nodes if existing is not None else ()
        if track is None:
            track = existing.track if existing is not None and version == "latest" else ""
        if track and track not in TRACKS:
            raise DeployError(f"track {track!r} is not one of: {', '.join(TRACKS)}")
        if not 0 <= replicas <= 1000:
            raise DeployError(f"replicas must be between 0 and 1000, not {replicas}")
        await self._check_nodes(nodes)
        if track and version == "latest":
            version = await self.tracker.lookup(service_id, track) or version
            if version == "latest" and track == "latest":
                raise UnknownService(f"the hub has no version of {service_id} to follow")
        manifest = await self._resolve(service_id, version)
        dep = Deployment(manifest.service_id, manifest.version, replicas, manifest.resources,
                         tuple(m.model_id for m in manifest.models), tuple(nodes), manifest.port, track)
        async with self._lock:
            conflicts = model_conflicts(dep, self._deployments.values()) + self.local.conflicts(dep)
            if conflicts:
                raise DeployConflict(f"cannot deploy {service_id}@{dep.version}: {conflicts[0]}")
            await trio.to_thread.run_sync(self.store.save_deployment, dep)
            self._deployments[dep.service_id] = dep
        self.wake()
        return dep

    async def _check_nodes(self, nodes: tuple[str, ...]) -> None:
        """Refuse node names (or ids) that no node that ever joined this plane has."""
        if not nodes:
            return
        known = {n for rec in self.registry.nodes() for n in (rec.node_id, rec.name)}
        stored = await trio.to_thread.run_sync(self.store.known_nodes)
        known.update(n for node_id, name, _ in stored for n in (node_id, name))
        unknown = [n for n in nodes if n not in known]
        if unknown:
            names = ", ".join(sorted({rec.name for rec in self.registry.nodes()} | {name for _, name, _ in stored})) or "none"
            raise DeployError(f"no node named {unknown[0]!r} has joined this plane (nodes: {names})")

    async def scale(self, service_id: str, replicas: int) -> Deployment:
        """Change the replica count of an existing deployment."""
        dep = self._deployment(service_id)
        return await self.deploy(service_id, dep.version, replicas=replicas, nodes=dep.nodes, track=dep.track)

    async def undeploy(self, service_id: str) -> None:
        """Remove a deployment; its replicas are stopped."""
        self._deployment(service_id)
        async with self._lock:
            await trio.to_thread.run_sync(self.store.delete_deployment, service_id)
            self._deployments.pop(service_id, None)
        self.wake()

    def deployments(self) -> list[Deployment]:
        """Every deployment the plane manages, by service id."""
        return sorted(self._deployments.values(), key=lambda d: d.service_id)

    def deployment(self, service_id: str) -> Deployment | None:
        """The deployment of `service_id`, or None."""
        return self._deployments.get(service_id)

    def _deployment(self, service_id: str) -> Deployment:
        try:
            return self._deployments[service_id]
        except KeyError:
            raise NotDeployed(f"no deployment of {service_id!r}") from None

    # -- what nodes say ----------------------------------------------------------------------

    def attach(self, node_id: str, link: NodeLink) -> None:
        """A node's connection is up; a connection it had before is told so and closed.

        `link` itself is closed instead if its join token was revoked meanwhile, or if a
        newer connection of the node said hello meanwhile (the registry's epoch is newer):
        the newest hello always wins, whatever order the connections get here in.
        """
        node = self.registry.get(node_id)
        if link.token_id in self._revoked_tokens:
            link.close("the join token that enrolled this node was revoked", REVOKED)
            return
        if node is None or node.epoch != link.epoch:
            link.close(REPLACED_REASON, REPLACED)
            return
        old = self._links.get(node_id)
        self._links[node_id] = link
        self._sent.pop(node_id, None)
        if old is not None and old.epoch != link.epoch:
            old.close(REPLACED_REASON, REPLACED)
        self.wake()

    def detach(self, node_id: str, epoch: int) -> None:
        """A node's connection closed (ignored if a newer one replaced it)."""
        link = self._links.get(node_id)
        if link is not None and link.epoch == epoch:
            del self._links[node_id]
            self._sent.pop(node_id, None)

    def mux_for(self, node_id: str) -> Mux | None:
        """The live tunnel to a node, or None when it is not connected."""
        link = self._links.get(node_id)
        return link.mux if link is not None else None

    async def revoke_token(self, token_id_or_name: str) -> int:
        """Revoke join tokens and the node credentials they issued; returns how many tokens.

        Their nodes' connections are closed at once (fatal error, code `revoked`), so those
        nodes are lost and their replicas placed elsewhere; they cannot connect again.
        """
        ids = await trio.to_thread.run_sync(self.store.revoke_token, token_id_or_name)
        self._revoked_tokens.update(ids)  # a connection admitted just before must not attach after
        for node_id, link in list(self._links.items()):
            if link.token_id in self._revoked_tokens:
                link.close(f"the join token {token_id_or_name!r} that enrolled this node was revoked", REVOKED)
                self.detach(node_id, link.epoch)
                self.registry.disconnect(node_id, link.epoch)
        return len(ids)

    def report(self, node_id: str, report: ReplicaReport) -> bool:
        """Apply a replica report; False (ignored) if it is stale or from the wrong node."""
        current = next((r for r in self._replicas if r.replica_id == report.replica_id), None)
        if current is None or current.node_id != node_id or current.attempt != report.attempt:
            if self.leadership is not None and not self.leadership.leading:
                self._unmatched[report.replica_id] = (node_id, report)  # the leader may have placed it just now
            return False
        self._reports[report.replica_id] = report
        if report.busy_port:
            # Something else listens on the declared port there: place the replica elsewhere.
            until = trio.current_time() + BUSY_PORT_TTL
            self._busy_ports.setdefault(node_id, {})[report.busy_port] = until
            self.wake()
        if current.state != report.state:
            self._replicas = tuple(replace(r, state=report.state) if r is current else r
                                   for r in self._replicas)
            self.wake()
        return True

    def note_logs(self, node_id: str, logs: dict[str, tuple[str, ...]]) -> None:
        """Keep the worker log tails a node sent, for its replicas only (the console's node page)."""
        self._worker_logs.note(node_id, logs, self._replicas)

    def worker_log(self, replica_id: str) -> tuple[str, ...]:
        """The last lines of a replica's worker log its node sent for its current placement; () when none."""
        return self._worker_logs.get(replica_id, self._replicas)

    def wake(self) -> None:
        """Ask the reconcile loop for a round soon."""
        self._changed.set()

    # -- the loop ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sweep and reconcile until cancelled (with a `leadership`: only while this plane leads)."""
        self._reconnect.start()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.registry.run_sweeper)
            if self.leadership is not None:
                await nursery.start(self.leadership.run, self)
                task_status.started()
                return
            await self.reconcile_once()
            task_status.started()
            await self.lead()

    async def lead(self) -> None:
        """Follow the hub's channels and reconcile whenever something changed, until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.tracker.run)
            while True:
                await self.reconcile_once()
                with trio.move_on_after(RECONCILE_TICK):
                    await self._changed.wait()
                self._changed = trio.Event()

    async def reconcile_once(self) -> None:
        """One round: plan, persist, tell every connected node what it should run."""
        leader = self.leadership
        if leader is not None and not leader.valid():
            raise LostLeadership(f"the scheduler lease of epoch {leader.epoch} ran out")
        async with self._lock:
            ready = [self._capacity(n) for n in self.registry.nodes(NodeState.READY)]
            waiting = self._reconnect.nodes(self._replicas)
            plan = reconcile(list(self._deployments.values()), self._replicas, ready, reconnecting=waiting)
            if plan.replicas != self._replicas:
                if leader is not None:
                    await leader.confirm()  # the write below is this epoch's, or none at all
                self._replicas = plan.replicas
                await trio.to_thread.run_sync(self.store.save_replicas, plan.replicas)
            self._unplaced = dict(plan.unplaced)
            for service_id, nodes in self._reconnect.notes(self._replicas, waiting).items():
                self._unplaced.setdefault(service_id, nodes)
            live = {r.replica_id for r in self._replicas}
            self._reports = {k: v for k, v in self._reports.items() if k in live}
            self._worker_logs.keep_only(live)
        for node_id, link in list(self._links.items()):
            wanted = tuple(Assignment(r.replica_id, r.service_id, r.version, r.attempt, r.gpus)
                           for r in self._replicas if r.node_id == node_id)
            if self._sent.get(node_id) == wanted:
                continue
            if leader is not None and not leader.valid():
                raise LostLeadership(f"the scheduler lease of epoch {leader.epoch} ran out")
            self._sent[node_id] = wanted
            await link.send(Assign(generation=next(self._generation), replicas=wanted,
                                   epoch=leader.epoch if leader is not None else 0))

    def _capacity(self, node: NodeRecord) -> NodeCapacity:
        hello = node.hello
        now = trio.current_time()
        busy = self._busy_ports.get(node.node_id, {})
        for port in [p for p, until in busy.items() if until <= now]:
            del busy[port]
        return NodeCapacity(node.node_id, node.name, hello.ram_mb, tuple(g.vram_mb for g in hello.gpus),
                            gpu_index=gpu_indexes(hello.gpus), busy_ports=frozenset(busy))

    # -- what the gateway and `flowctl status` read -------------------------------------------

    def routes(self, model_id: str) -> list[Route]:
        """The ready replicas serving `model_id` on nodes that are connected and ready."""
        found = []
        for r in self._replicas:
            report = self._reports.get(r.replica_id)
            link = self._links.get(r.node_id)
            if self._serving(r) and report is not None and link is not None and model_id in report.models:
                found.append(Route(r, r.node_id, report.max_concurrency, link))
        found += [Route(r, r.node_id, n, self._links[r.node_id]) for r, n in self.local.replicas(model_id)
                  if self._serving(r)]
        return found

    def deploys(self, model_id: str) -> bool:
        """Whether any deployment serves `model_id` (ready or not): tells 503 from 404."""
        return any(model_id in d.models for d in self._deployments.values()) or self.local.deploys(model_id)

    def _serving(self, r: Replica) -> bool:
        """Ready as its node last said, and that node is ready and connected now."""
        node = self.registry.get(r.node_id)
        return (r.state == "ready" and node is not None and node.state is NodeState.READY
                and r.node_id in self._links)

    def _shown_state(self, r: Replica) -> str:
        # A report of "ready" from a node that is lost (or not connected) is stale: say so.
        return "lost" if r.state == "ready" and not self._serving(r) else r.state

    def models(self) -> dict[str, list[Route]]:
        """Every model with at least one ready replica."""
        names = {m for rep in self._reports.values() for m in rep.models} | self.local.model_names()
        return {m: routes for m in sorted(names) if (routes := self.routes(m))}

    def status(self) -> dict:
        """Nodes, deployments and models, in the shape `flowctl status --json` prints."""
        now = trio.current_time()
        nodes = [{
            "node_id": n.node_id, "name": n.name, "state": str(n.state), "connection": n.epoch,
            "last_heartbeat_s": round(now - n.last_seen, 1), "heartbeats": n.heartbeats,
            "outstanding": n.outstanding if self.in_flight is None else self.in_flight(n.node_id),
            "cpu_count": n.hello.cpu_count, "ram_mb": n.hello.ram_mb, "free_ram_mb": n.free_ram_mb,
            "labels": dict(n.labels),
            "gpus": [{"index": i, "name": g.name, "vram_mb": g.vram_mb}
                     for i, g in zip(gpu_indexes(n.hello.gpus), n.hello.gpus, strict=True)],
            "replicas": sum(1 for r in self._replicas if r.node_id == n.node_id),
        } for n in self.registry.nodes()]
        deployments = []
        for dep in sorted(self._deployments.values(), key=lambda d: d.service_id):
            mine = [r for r in self._replicas if r.service_id == dep.service_id]
            deployments.append({
                "service": dep.service_id, "version": dep.version, "desired": dep.replicas,
                "track": dep.track or None, "track_error": self.tracker.errors.get(dep.service_id),
                "port": dep.port,
                "ready": sum(1 for r in mine if self._serving(r) and r.version == dep.version),
                "models": list(dep.models), "unplaced": self._unplaced.get(dep.service_id),
                "replicas": [{"replica_id": r.replica_id, "version": r.version, "node_id": r.node_id,
                              "attempt": r.attempt, "state": self._shown_state(r), "gpus": list(r.gpus),
                              "detail": getattr(self._reports.get(r.replica_id), "detail", "")}
                             for r in mine],
            })
        deployments += self.local.status(self._serving)
        models = [{"model": m, "replicas": len(routes), "service": routes[0].replica.service_id}
                  for m, routes in self.models().items()]
        return {"nodes": nodes, "deployments": deployments, "models": models}
