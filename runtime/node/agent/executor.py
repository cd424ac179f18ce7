"""What a node does with its desired state: install each assigned version, run it, report.

Each assigned replica is one `_Replica` whose life is one cancel scope in the
executor's nursery: install the version (the package manager: incremental,
verified, atomic), start its worker under the supervisor on a free localhost
port, health-gate it, and only then point `current` at it. A version whose
worker never becomes healthy is stopped and reported `failed` with the reason;
`current` keeps pointing at the last version that worked, and the start is
retried with backoff while the assignment stands.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
import trio

from packer.errors import PackerError
from runtime.control.messages import (
    MAX_LOG_LINE,
    MAX_LOG_LINES,
    Assign,
    Assignment,
    InstalledVersion,
    ReplicaReport,
)
from runtime.errors import FlowError
from runtime.exception_groups import collapse
from runtime.node.packages import InstallOptions, NodeLayout, activate, install
from runtime.node.workers import (
    PortClaims,
    WorkerSpec,
    WorkerStartFailed,
    WorkerState,
    check_passthrough,
    free_port,
    orphans,
    supervise,
)
from runtime.node.workers.logs import read_tail

log = logging.getLogger("flowctl.node")
RETRY_INITIAL_S = 2.0
RETRY_MAX_S = 60.0
HEALTH_READ_TIMEOUT_S = 2.0
Report = Callable[[ReplicaReport], None]


@dataclass(frozen=True)
class ExecutorSettings:
    """How replicas run on this node."""

    # The control plane decides versions: an older one is a deliberate rollback, not an attack.
    install: InstallOptions = field(default_factory=lambda: InstallOptions(activate=False, allow_downgrade=True))
    grace_s: float = 10.0
    retry_initial_s: float = RETRY_INITIAL_S
    retry_max_s: float = RETRY_MAX_S
    supervise_kwargs: dict = field(default_factory=dict)
    # Names (or PREFIX*) of the node's environment that workers see on top of the built-in
    # allow-list (runtime/node/workers/workerenv.py); the node's own FLOWCTL_* settings never.
    worker_env_passthrough: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "worker_env_passthrough", check_passthrough(self.worker_env_passthrough))


class _Replica:
    """One assigned replica: its assignment, its scope, and what it last reported."""

    def __init__(self, assignment: Assignment, report: Report):
        self.assignment = assignment
        self.scope = trio.CancelScope()
        self.port: int | None = None
        self.ready = False
        self.models: tuple[str, ...] = ()
        self.max_concurrency = 1
        self._report = report
        self.last: ReplicaReport | None = None
        self.log_path: Path | None = None  # its worker's log file, once known

    def say(self, state: str, detail: str = "", busy_port: int = 0) -> None:
        a = self.assignment
        self.ready = state == "ready"
        self.last = ReplicaReport(a.replica_id, a.service_id, a.version, a.attempt, state,  # type: ignore[arg-type]
                                  detail=detail[:500], models=self.models,
                                  max_concurrency=self.max_concurrency, busy_port=busy_port)
        self._report(self.last)


class NodeExecutor:
    """Installs and supervises the replicas assigned to this node (see the module docstring)."""

    def __init__(self, layout: NodeLayout, nursery: trio.Nursery, settings: ExecutorSettings | None = None):
        self.layout = layout
        self.settings = settings or ExecutorSettings()
        self._nursery = nursery
        self._replicas: dict[str, _Replica] = {}
        self._ports = PortClaims()  # services' declared ports (service.json `port`)

    def inventory(self) -> tuple[tuple[InstalledVersion, ...], tuple[ReplicaReport, ...]]:
        """Installed versions and the current reports of running replicas."""
        installed = tuple(InstalledVersion(s, v) for s in self.layout.installed_services()
                          for v in self.layout.installed_versions(s))
        reports = tuple(r.last for r in self._replicas.values() if r.last is not None)
        return installed, reports

    def worker_url(self, replica_id: str) -> str | None:
        """Where a ready replica's worker listens."""
        replica = self._replicas.get(replica_id)
        if replica is None or not replica.ready or replica.port is None:
            return None
        return f"http://127.0.0.1:{replica.port}"

    def log_tails(self) -> dict[str, tuple[str, ...]]:
        """{replica id: the last lines of its worker log} (blocking: call it from a thread)."""
        return {replica_id: read_tail(r.log_path, lines=MAX_LOG_LINES, max_line=MAX_LOG_LINE)
                for replica_id, r in list(self._replicas.items()) if r.log_path is not None}

    def apply(self, assign: Assign, hub_url: str, report: Report) -> None:
        """Stop replicas no longer assigned (or re-assigned with a new attempt), start new ones."""
        wanted = {a.replica_id: a for a in assign.replicas}
        for replica_id, replica in list(self._replicas.items()):
            if wanted.get(replica_id) != replica.assignment:
                replica.scope.cancel()
                del self._replicas[replica_id]
        for replica_id, assignment in wanted.items():
            if replica_id in self._replicas:
                self._replicas[replica_id]._report = report
                continue
            replica = _Replica(assignment, report)
            self._replicas[replica_id] = replica
            self._nursery.start_soon(self._run, replica, hub_url, name=f"replica {replica_id}")

    async def _run(self, replica: _Replica, hub_url: str) -> None:
        a = replica.assignment
        delay = self.settings.retry_initial_s
        with replica.scope:
            while True:
                try:
                    await self._start_and_supervise(replica, hub_url)
                except (WorkerStartFailed, FlowError, PackerError, OSError, httpx.HTTPError) as exc:
                    reason = str(exc) or type(exc).__name__
                    # The child's own last words say more than the supervisor's notes.
                    said = [line for line in getattr(exc, "log_tail", None) or ()
                            if not line.startswith("[flowctl]")]
                    if said:
                        reason += f" | log: {said[-1]}"
                    log.warning("replica %s of %s@%s failed: %s", a.replica_id, a.service_id, a.version, reason)
                    replica.say("failed", reason, busy_port=getattr(exc, "busy_port", 0))
                await trio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_s)

    async def _start_and_supervise(self, replica: _Replica, hub_url: str) -> None:
        a = replica.assignment
        replica.say("installing")
        result = await install(self.layout, hub_url, a.service_id, a.version, options=self.settings.install)
        manifest, _ = await trio.to_thread.run_sync(self.layout.read_manifest, a.service_id, a.version)
        replica.models = tuple(m.model_id for m in manifest.models)
        replica.port = manifest.port or free_port()  # a declared port is where the service listens
        python = Path(result.venv) / "bin" / "python" if result.venv else WorkerSpec.python
        siblings = [r for r in self._replicas.values() if r.assignment.service_id == a.service_id]
        log_name = a.service_id if siblings and siblings[0] is replica else f"{a.service_id}-{a.replica_id}"
        spec = WorkerSpec(
            service_id=a.service_id, version=a.version,
            service_dir=self.layout.version_dir(a.service_id, a.version), command=manifest.startup_command,
            port=replica.port, health=manifest.health_check,
            log_path=self.layout.root / "logs" / f"{log_name}.log", grace_s=self.settings.grace_s,
            env={**dict(manifest.env), "FLOWCTL_REPLICA_ID": a.replica_id},
            passthrough=self.settings.worker_env_passthrough, python=python, gpus=a.gpus,
        )

        replica.log_path = spec.log_path
        activated = False

        run_dir = self.layout.root / "run"

        def on_state(state: WorkerState) -> None:
            if state.kind == "ready" and state.pid is not None:
                orphans.record(run_dir, a.replica_id, state.pid)
            elif state.kind in ("crashed", "stopped", "failed"):
                orphans.forget(run_dir, a.replica_id)
            if state.kind == "starting":
                replica.say("starting")
            elif state.kind == "ready" and activated:
                replica.say("ready")
            elif state.kind == "crashed":
                replica.say("failed", f"worker {state.reason or 'died'}; restarting")

        with collapse():
            async with self._ports.hold(manifest.port, a.replica_id), trio.open_nursery() as nursery:
                await nursery.start(partial(supervise, spec, on_state=on_state,
                                            **self.settings.supervise_kwargs))
                # Healthy: only now does `current` move to this version (health-gated activation).
                await activate(self.layout, a.service_id, a.version, keep=self.settings.install.keep)
                replica.max_concurrency = await max_concurrency(replica.port, manifest.health_check.endpoint)
                activated = True
                replica.say("ready")


async def max_concurrency(port: int, endpoint: str) -> int:
    """What the worker advertises in its health body (`max_concurrency`), else 1."""
    try:
        async with httpx.AsyncClient(timeout=HEALTH_READ_TIMEOUT_S) as client:
            body = (await client.get(f"http://127.0.0.1:{port}{endpoint}")).json()
        value = body.get("max_concurrency", 1) if isinstance(body, dict) else 1
        return value if isinstance(value, int) and 0 < value <= 4096 else 1
    except (httpx.HTTPError, ValueError):
        return 1
