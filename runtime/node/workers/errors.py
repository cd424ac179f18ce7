"""Worker supervision's errors, one hierarchy.

    SupervisionError (runtime.errors.FlowError)
    ├── BadPassthrough         an entry of worker_env_passthrough is not a name or a PREFIX*
    ├── PortInUse              a service's declared port is held by another process on this node
    └── WorkerError            a worker process failed (service_id, version, log_tail)
        ├── WorkerStartFailed  it exited, or never answered its health check, before ready
        ├── WorkerExited       it exited after it was ready
        └── WorkerUnhealthy    it stopped answering its liveness probe and was stopped
"""

from __future__ import annotations

import signal

from runtime.errors import FlowError


class SupervisionError(FlowError):
    """Base of worker supervision's errors."""


class BadPassthrough(SupervisionError, ValueError):
    """An entry of `worker_env_passthrough` is not a variable name or a `PREFIX*`."""

    def __init__(self, entry: object, reason: str):
        self.entry = entry
        super().__init__(f"worker_env_passthrough: {entry!r} {reason}")


class PortInUse(SupervisionError):
    """A service's declared port (service.json `port`) is in use on this node by something else."""

    def __init__(self, port: int, holder: str = "another process"):
        self.busy_port = port
        super().__init__(f"port {port} (the service's declared port) is in use on this node by {holder}")


class WorkerError(SupervisionError):
    """A worker process failed; `log_tail` holds its last lines of output."""

    def __init__(self, service_id: str, version: str, message: str, log_tail: list[str]):
        self.service_id = service_id
        self.version = version
        self.log_tail = log_tail
        super().__init__(f"{service_id}@{version}: {message}")


class WorkerStartFailed(WorkerError):
    """The worker exited or stayed unhealthy before it was ready; `code` is None on a timeout."""

    def __init__(self, service_id: str, reason: str, log_tail: list[str], *,
                 version: str = "", code: int | None = None):
        self.reason = reason
        self.code = code
        super().__init__(service_id, version, f"failed to start: {reason}", log_tail)


class WorkerExited(WorkerError):
    """The worker exited on its own after it was ready."""

    def __init__(self, service_id: str, version: str, code: int, log_tail: list[str]):
        self.code = code
        self.reason = describe_exit(code)
        super().__init__(service_id, version, self.reason, log_tail)


class WorkerUnhealthy(WorkerError):
    """The worker failed `failures` liveness probes in a row and was stopped."""

    def __init__(self, service_id: str, version: str, failures: int, detail: str,
                 code: int | None, log_tail: list[str]):
        self.failures = failures
        self.detail = detail
        self.code = code
        self.reason = f"failed {failures} health probes in a row (last: {detail})"
        super().__init__(service_id, version, self.reason, log_tail)


def describe_exit(code: int) -> str:
    """'exited with code N', or 'killed by SIGX' for a negative return code."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"
