"""A service directory run as this node's own deployment (`flowctl run DIR`), restarted on edits.

`DirectoryService` reads DIR/service.json, runs its startup command in DIR under the
supervisor (a free localhost port in FLOWCTL_PORT, the health check gating readiness,
SIGTERM then SIGKILL on stop) and keeps the agent's announcement (`LocalServices`) in
step: starting, ready (with the worker's max_concurrency), failed (with the reason).

When DIR's files change (runtime.node.agent.watch: polled, debounced) the worker is
stopped and DIR is read and started again. A broken edit (invalid service.json, a worker
that exits or never gets healthy) is reported `failed` with the reason and the watch goes
on: the next good edit brings it back. It keeps the last good service id and models
meanwhile, so the gateway says 503 (not ready) rather than 404 (no such model).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import msgspec
import trio

from packer.errors import ManifestError, PackerError
from packer.manifest import MANIFEST_NAME, Manifest, parse_source_manifest
from runtime.control.messages import Local, LocalDeployment, LocalVerdict
from runtime.exception_groups import collapse
from runtime.node.agent.executor import max_concurrency
from runtime.node.agent.watch import DEBOUNCE_S, POLL_INTERVAL_S, snapshot, wait_for_change
from runtime.node.workers import (
    WorkerSpec,
    WorkerStartFailed,
    WorkerState,
    free_port,
    orphans,
    supervise,
)

log = logging.getLogger("flowctl.node")
REPLICA_PREFIX = "local:"
DEFAULT_GRACE_S = 5.0


def read_manifest(directory: Path) -> Manifest:
    """DIR/service.json, validated as `flowctl pack` would.

    Error handling: ManifestError (packer) naming the problem; OSError when unreadable.
    """
    try:
        raw = (directory / MANIFEST_NAME).read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"not found in {str(directory)!r}") from None
    return parse_source_manifest(raw)


@dataclass(frozen=True)
class RunSettings:
    """How a service directory is run and watched."""

    poll_interval_s: float = POLL_INTERVAL_S
    debounce_s: float = DEBOUNCE_S
    grace_s: float = DEFAULT_GRACE_S
    passthrough: tuple[str, ...] = ()
    python: Path = Path(sys.executable)
    supervise_kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.05 <= self.poll_interval_s <= 60:
            raise ValueError(f"poll interval {self.poll_interval_s!r} s is not within 0.05..60")
        if not 0 <= self.debounce_s <= 10:
            raise ValueError(f"debounce {self.debounce_s!r} s is not within 0..10")


class DirectoryService:
    """One directory as a node-owned deployment (see the module docstring); a `LocalServices`.

    `say(line)` tells the user what happened (started, ready, failed and why, restarting).
    `refused` is set when the plane refuses the deployment before it ever accepted it;
    `refusal` then says why. A later refusal (an edit took a model id the plane serves
    elsewhere) is said like a broken edit, and the next edit is announced again.
    """

    def __init__(self, directory: Path, state_dir: Path, settings: RunSettings | None = None, *,
                 say: Callable[[str], None] = log.info):
        self.directory = Path(directory).resolve()
        self.settings = settings or RunSettings()
        self._logs = state_dir / "logs"
        self._run_dir = state_dir / "run"
        self._say = say
        self._deployment: LocalDeployment | None = None
        self._port: int | None = None
        self._changes = 0
        self._lot = trio.lowlevel.ParkingLot()
        self.refused = trio.Event()
        self.refusal = ""
        self._ever_accepted = False
        self.accepted: str | None = None  # the service id the plane last accepted

    # -- LocalServices ---------------------------------------------------------------------

    def announcement(self) -> tuple[int, Local]:
        """The change counter and what to announce: this directory's deployment, if known."""
        return self._changes, Local((self._deployment,) if self._deployment is not None else ())

    async def wait_changed(self, seen: int) -> None:
        """Return once the announcement changed after `seen`."""
        while self._changes == seen:
            await self._lot.park()

    def worker_url(self, replica_id: str) -> str | None:
        """The ready worker's URL, for its replica id `local:<service_id>`."""
        dep = self._deployment
        if dep is None or dep.state != "ready" or self._port is None or replica_id != REPLICA_PREFIX + dep.service_id:
            return None
        return f"http://127.0.0.1:{self._port}"

    def verdict(self, verdict: LocalVerdict) -> None:
        """Remember the plane's answer; a refusal of this directory's service sets `refused`."""
        dep = self._deployment
        if dep is None:
            return
        if dep.service_id in verdict.refused:
            refusal = f"the control plane refused {dep.service_id}: {verdict.refused[dep.service_id]}"
            if self.accepted is None and not self._ever_accepted:
                self.refusal = refusal
                self.refused.set()
            elif self.accepted is not None:
                self.accepted = None
                self._say(f"error: {refusal} (watching {self.directory} for the next edit)")
        elif dep.service_id in verdict.accepted and self.accepted != dep.service_id:
            self.accepted = dep.service_id
            self._ever_accepted = True
            self._say(f"registered {dep.service_id} with the control plane (models: {', '.join(dep.models)})")

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the directory until cancelled, restarting it whenever its files change.

        Cancellation: the worker is stopped (SIGTERM, then SIGKILL after the grace period).
        """
        await orphans.sweep(self._run_dir)  # a worker a SIGKILLed `flowctl run` left behind
        files = await trio.to_thread.run_sync(snapshot, self.directory)
        task_status.started()
        while True:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._serve_once)
                files = await wait_for_change(self.directory, files, interval=self.settings.poll_interval_s,
                                              debounce=self.settings.debounce_s)
                nursery.cancel_scope.cancel()
            self._say(f"{self.directory}: files changed, restarting")

    def _set(self, deployment: LocalDeployment | None) -> None:
        if deployment != self._deployment:
            self._deployment = deployment
            self._changes += 1
            self._lot.unpark_all()

    def _fail(self, reason: str) -> None:
        reason = " ".join(reason.split())
        self._say(f"error: {reason} (watching {self.directory} for the next edit)")
        if self._deployment is not None:
            self._set(msgspec.structs.replace(self._deployment, state="failed", detail=reason[:500]))

    async def _serve_once(self) -> None:
        try:
            manifest = await trio.to_thread.run_sync(read_manifest, self.directory)
        except (PackerError, OSError) as exc:
            self._fail(str(exc))
            return
        models = tuple(m.model_id for m in manifest.models)
        replica_id = REPLICA_PREFIX + manifest.service_id
        self._port = port = manifest.port or free_port()  # a declared port is where it listens
        try:
            spec = WorkerSpec(
                service_id=manifest.service_id, version=manifest.version, service_dir=self.directory,
                command=manifest.startup_command, port=port, health=manifest.health_check,
                log_path=self._logs / f"{manifest.service_id}.log", grace_s=self.settings.grace_s,
                env={**dict(manifest.env), "FLOWCTL_REPLICA_ID": replica_id},
                passthrough=self.settings.passthrough, python=self.settings.python)
        except ValueError as exc:
            self._fail(str(exc))
            return
        starting = LocalDeployment(manifest.service_id, manifest.version, "starting", models)
        self._set(starting)
        self._say(f"starting {manifest.service_id}@{manifest.version} from {self.directory} "
                  f"(log: {spec.log_path})")
        ready: LocalDeployment | None = None

        def on_state(state: WorkerState) -> None:
            # Restarts after a crash are the supervisor's; only say what changed.
            if state.kind == "ready" and state.pid is not None:
                orphans.record(self._run_dir, replica_id, state.pid)
                if ready is not None:
                    self._set(ready)
            elif state.kind in ("crashed", "stopped", "failed"):
                orphans.forget(self._run_dir, replica_id)
            if state.kind == "crashed":
                tail = [line for line in state.log_tail if not line.startswith("[flowctl]")]
                self._fail(f"worker {state.reason or 'died'}" + (f" | log: {tail[-1]}" if tail else "")
                           + "; restarting it")

        try:
            with collapse():
                async with trio.open_nursery() as nursery:
                    await nursery.start(partial(supervise, spec, on_state=on_state, **self.settings.supervise_kwargs))
                    concurrency = await max_concurrency(port, manifest.health_check.endpoint)
                    ready = msgspec.structs.replace(starting, state="ready", max_concurrency=concurrency)
                    self._set(ready)
                    self._say(f"ready: {manifest.service_id}@{manifest.version} serves {', '.join(models)} "
                              f"(worker on 127.0.0.1:{port})")
        except WorkerStartFailed as exc:
            said = [line for line in exc.log_tail or () if not line.startswith("[flowctl]")]
            self._fail(f"{manifest.service_id} did not start: {exc}" + (f" | log: {said[-1]}" if said else ""))
