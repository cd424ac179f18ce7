"""Worker supervision: run a service version as a child process, gate it on its health
check, restart it with backoff, and stop its whole process group.

Errors: see `runtime.node.workers.errors` (SupervisionError and its subclasses).
"""

from runtime.node.workers import orphans
from runtime.node.workers.errors import (
    BadPassthrough,
    PortInUse,
    SupervisionError,
    WorkerError,
    WorkerExited,
    WorkerStartFailed,
    WorkerUnhealthy,
)
from runtime.node.workers.health import ProbeResult, probe, wait_until_healthy
from runtime.node.workers.logs import LogPump, LogTail, RotatingLog
from runtime.node.workers.pgroups import stop_group, terminate_group
from runtime.node.workers.ports import PortClaims
from runtime.node.workers.process import WorkerHandle, WorkerSpec, free_port, run_worker
from runtime.node.workers.supervisor import WorkerState, supervise
from runtime.node.workers.workerenv import WORKER_ENV_ALLOWLIST, check_passthrough, inherited_env

__all__ = [
    "WORKER_ENV_ALLOWLIST", "BadPassthrough", "LogPump", "LogTail", "ProbeResult", "PortClaims", "PortInUse", "RotatingLog",
    "SupervisionError", "WorkerError", "WorkerExited", "WorkerHandle", "WorkerSpec",
    "WorkerStartFailed", "WorkerState", "WorkerUnhealthy", "check_passthrough", "free_port",
    "inherited_env", "orphans", "probe", "run_worker", "stop_group", "supervise",
    "terminate_group", "wait_until_healthy",
]
