"""One worker process: start it in its version dir, gate on its health check, stop it cleanly.

The child runs in its own session (process group = its pid), so stopping it
reaches whatever it spawned: SIGTERM to the group, a grace period, SIGKILL.
Its stdout and stderr go through one pipe into the rotating log.

Error handling: WorkerStartFailed, WorkerExited, WorkerUnhealthy (runtime.node.workers.errors).
"""

from __future__ import annotations

import errno
import os
import shlex
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import MappingProxyType

import trio

from packer.manifest import HealthCheck
from runtime.node.workers.errors import (
    WorkerError,
    WorkerExited,
    WorkerStartFailed,
    WorkerUnhealthy,
    describe_exit,
)
from runtime.node.workers.health import (
    DEFAULT_PROBE_INTERVAL_S,
    DEFAULT_PROBE_TIMEOUT_S,
    LOCALHOST,
    ProbeResult,
    probe,
    wait_until_healthy,
)
from runtime.node.workers.logs import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, LogPump, RotatingLog
from runtime.node.workers.pgroups import stop_group, terminate_group
from runtime.node.workers.workerenv import check_passthrough, gpu_env, inherited_env

DEFAULT_GRACE_S = 10.0
DEFAULT_LIVENESS_INTERVAL_S = 10.0
DEFAULT_LIVENESS_FAILURES = 3
DEFAULT_DRAIN_S = 1.0
TAIL_LINES = 20
PYTHON_NAMES = frozenset({"python", "python3"})


@dataclass(frozen=True, kw_only=True)
class WorkerSpec:
    """Everything needed to run one service version as a worker process."""

    service_id: str
    version: str
    service_dir: Path
    command: str
    port: int
    log_path: Path
    health: HealthCheck = field(default_factory=HealthCheck)
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    passthrough: tuple[str, ...] = ()
    python: Path = Path(sys.executable)
    grace_s: float = DEFAULT_GRACE_S
    max_log_bytes: int = DEFAULT_MAX_BYTES
    log_backups: int = DEFAULT_BACKUPS
    # The GPU indexes the plane gave this worker (() for none); None leaves the
    # inherited CUDA_VISIBLE_DEVICES as it is (a worker the plane did not place).
    gpus: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not shlex.split(self.command):
            raise ValueError(f"{self.service_id}: empty startup command {self.command!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"{self.service_id}: port {self.port!r} is out of range")
        if self.grace_s < 0:
            raise ValueError(f"{self.service_id}: grace_s {self.grace_s!r} is negative")
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
        object.__setattr__(self, "passthrough", check_passthrough(self.passthrough))

    @property
    def name(self) -> str:
        """`service_id@version`, for messages."""
        return f"{self.service_id}@{self.version}"

    def argv(self) -> list[str]:
        """The command split like a shell would, with `python`/`python3` replaced by self.python."""
        argv = shlex.split(self.command)
        if argv[0] in PYTHON_NAMES:
            argv[0] = str(self.python)
        return argv

    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The child's environment: the allow-listed part of `base` (default os.environ; see
        runtime.node.workers.workerenv) and `passthrough`, the worker contract's variables, then `env`."""
        env = inherited_env(os.environ if base is None else base, self.passthrough)
        # Unbuffered so that a crash's last words reach the log (and the error's tail).
        env["PYTHONUNBUFFERED"] = "1"
        env.update({
            "FLOWCTL_HOST": LOCALHOST,  # where the node's health probes and tunnel reach it
            "FLOWCTL_PORT": str(self.port),
            "FLOWCTL_SERVICE_DIR": str(self.service_dir),
            "FLOWCTL_SERVICE_ID": self.service_id,
            "FLOWCTL_SERVICE_VERSION": self.version,
            "MODELS_DIR": str(Path(self.service_dir) / "models"),
        })
        env.update(self.env)
        if self.gpus is not None:
            env.update(gpu_env(self.gpus))
        return env


@dataclass(frozen=True)
class WorkerHandle:
    """A running, healthy worker."""

    service_id: str
    version: str
    pid: int
    port: int

    @property
    def url(self) -> str:
        """Where the worker answers HTTP."""
        return f"http://{LOCALHOST}:{self.port}"


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port on `host` that was free a moment ago (the OS picked it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(port: int, host: str = LOCALHOST) -> bool:
    """Whether something on this machine holds `port` on `host` (a bind fails with EADDRINUSE)."""
    try:
        _check_port_free(port, host)
    except OSError:
        return True
    return False


def _check_port_free(port: int, host: str = LOCALHOST) -> None:
    # Something already answering on the port (say, a worker orphaned by a killed
    # agent) would pass the health check in the new worker's place.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            sock.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise
            # Anything else (a privileged port, say) is the worker's to run into.


async def run_worker(spec: WorkerSpec, *, task_status=trio.TASK_STATUS_IGNORED,
                     probe_interval_s: float = DEFAULT_PROBE_INTERVAL_S,
                     probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
                     liveness_interval_s: float = DEFAULT_LIVENESS_INTERVAL_S,
                     liveness_failures: int = DEFAULT_LIVENESS_FAILURES,
                     drain_s: float = DEFAULT_DRAIN_S) -> None:
    """Start the worker, report `WorkerHandle` once its health check answers 2xx, run until it ends.

    The port must be free on 127.0.0.1 when it starts (else WorkerStartFailed).
    Once ready it is probed every `liveness_interval_s`; `liveness_failures`
    failures in a row stop it.

    Cancellation: SIGTERM to the worker's process group, SIGKILL after
    `spec.grace_s`; returns only when the worker and everything it spawned are
    gone (a shielded wait), and the log has its last output (up to `drain_s`).

    Error handling: never returns normally. Before ready: WorkerStartFailed if
    the command cannot be run, the process exits, or `spec.health.timeout_s`
    passes (it is then stopped). After ready: WorkerExited when it exits,
    WorkerUnhealthy when it stops answering. Each error carries the log's tail.
    """
    pump = LogPump(RotatingLog(spec.log_path, max_bytes=spec.max_log_bytes,
                               backups=spec.log_backups))
    child = _Child(spec, pump, drain_s)
    outcome: WorkerError
    try:
        async with trio.open_nursery() as nursery:
            try:
                proc = await nursery.start(child.run)
            except OSError as error:
                reason = (f"port {spec.port} is already in use" if error.errno == errno.EADDRINUSE
                          else f"cannot run {spec.argv()[0]!r}: {error}")
                outcome = WorkerStartFailed(spec.service_id, reason, [], version=spec.version)
                pump.note(reason)
            else:
                started = await _until_ready(spec, child, probe_interval_s, probe_timeout_s)
                if started is None:
                    pump.note(f"ready: pid {proc.pid}, port {spec.port}")
                    task_status.started(WorkerHandle(spec.service_id, spec.version, proc.pid,
                                                     spec.port))
                    outcome = await _until_down(spec, child, liveness_interval_s,
                                                liveness_failures, probe_timeout_s)
                else:
                    outcome = started
            nursery.cancel_scope.cancel()  # stops the child if it still runs
        if isinstance(outcome, WorkerUnhealthy):
            outcome.code = child.returncode
    finally:
        if child.returncode is not None:
            pump.note(describe_exit(child.returncode))
        with trio.CancelScope(shield=True):
            await pump.aclose()
    # Read after the pump drained, so the tail holds the child's last words.
    outcome.log_tail = pump.tail.lines(TAIL_LINES)
    raise outcome


class _Child:
    """The process of one run_worker call, and its pipe into the log."""

    def __init__(self, spec: WorkerSpec, pump: LogPump, drain_s: float):
        self.spec = spec
        self.pump = pump
        self.drain_s = drain_s
        self.returncode: int | None = None
        self.exited = trio.Event()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Start the process, report it, and return once it and its group are gone.

        Error handling: OSError (port taken, command or cwd missing) is raised before started().
        """
        spec = self.spec
        argv = spec.argv()
        _check_port_free(spec.port)
        self.pump.note(f"starting {spec.name}: {shlex.join(argv)} (port {spec.port})")
        # Shielded so the log keeps what the child says while it shuts down; the
        # deadline set below bounds it if something outside the group holds the pipe.
        pump_scope = trio.CancelScope(shield=True)
        start_error: OSError | None = None
        async with trio.open_nursery() as nursery:
            try:
                proc = await nursery.start(partial(
                    trio.run_process, argv, check=False, cwd=spec.service_dir,
                    env=spec.child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, start_new_session=True,
                    deliver_cancel=partial(terminate_group, grace_s=spec.grace_s)))
            except OSError as error:
                start_error = error  # raised below, outside the nursery, so not in a group
            else:
                nursery.start_soon(self._pump, proc.stdout, pump_scope)
                task_status.started(proc)
                try:
                    await proc.wait()
                finally:
                    # When cancelled, run_process is delivering SIGTERM/SIGKILL meanwhile.
                    with trio.CancelScope(shield=True):
                        self.returncode = await proc.wait()
                        self.exited.set()
                        await stop_group(proc.pid, grace_s=spec.grace_s)
                    pump_scope.deadline = trio.current_time() + self.drain_s
        if start_error is not None:
            raise start_error

    async def _pump(self, stream: trio.abc.ReceiveStream, scope: trio.CancelScope) -> None:
        with scope:
            await self.pump.run(stream)


async def _until_ready(spec: WorkerSpec, child: _Child, interval_s: float,
                       probe_timeout_s: float) -> WorkerStartFailed | None:
    """None once healthy; otherwise why not (the caller stops the child)."""
    last: list[ProbeResult] = []
    outcome: WorkerStartFailed | None = None
    timeout = spec.health.timeout_s

    async def exited() -> None:
        nonlocal outcome
        await child.exited.wait()
        assert child.returncode is not None
        outcome = WorkerStartFailed(spec.service_id, describe_exit(child.returncode), [],
                                    version=spec.version, code=child.returncode)
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(exited)
        with trio.move_on_after(timeout):
            await wait_until_healthy(spec.port, spec.health, interval_s=interval_s,
                                     probe_timeout_s=min(probe_timeout_s, timeout),
                                     on_probe=lambda r: last.__setitem__(slice(None), [r]))
            nursery.cancel_scope.cancel()
            return None
        seen = f" (last probe: {last[0].detail})" if last else ""
        outcome = WorkerStartFailed(spec.service_id, f"not healthy after {timeout:g} s{seen}",
                                    [], version=spec.version)
        nursery.cancel_scope.cancel()
    return outcome


async def _until_down(spec: WorkerSpec, child: _Child, interval_s: float, failures_allowed: int,
                      probe_timeout_s: float) -> WorkerError:
    """Wait for the ready child to exit or fail `failures_allowed` liveness probes in a row."""
    outcome: WorkerError | None = None

    async def exited() -> None:
        nonlocal outcome
        await child.exited.wait()
        assert child.returncode is not None
        if outcome is None:
            outcome = WorkerExited(spec.service_id, spec.version, child.returncode, [])
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(exited)
        failures = 0
        while failures_allowed > 0:
            await trio.sleep(interval_s)
            result = await probe(spec.port, spec.health, timeout_s=probe_timeout_s)
            failures = 0 if result.healthy else failures + 1
            if failures >= failures_allowed and outcome is None:
                outcome = WorkerUnhealthy(spec.service_id, spec.version, failures,
                                          result.detail, None, [])
                nursery.cancel_scope.cancel()
                break
    assert outcome is not None
    return outcome
