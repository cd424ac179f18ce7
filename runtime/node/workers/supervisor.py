"""Keep one worker running: start it, restart it with backoff when it dies, report each step.

States, in the order they can happen (each a `WorkerState` passed to `on_state`):

    starting -> ready(pid) -> crashed(code, reason) -> backoff(delay) -> starting -> ...
    starting -> failed(reason)      the first start failed; supervise raises WorkerStartFailed
    any      -> stopped             supervise was cancelled and the worker is gone

A restart that fails to become healthy counts as a crash (code None on a
health timeout) and is retried after the next backoff delay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import trio

from runtime.node.workers.errors import WorkerExited, WorkerStartFailed, WorkerUnhealthy
from runtime.node.workers.health import DEFAULT_PROBE_INTERVAL_S
from runtime.node.workers.process import (
    DEFAULT_LIVENESS_FAILURES,
    DEFAULT_LIVENESS_INTERVAL_S,
    WorkerHandle,
    WorkerSpec,
    run_worker,
)

DEFAULT_BACKOFF_INITIAL_S = 1.0
DEFAULT_BACKOFF_MAX_S = 60.0
DEFAULT_STABLE_AFTER_S = 60.0
BACKOFF_FACTOR = 2.0

StateKind = Literal["starting", "ready", "crashed", "backoff", "stopped", "failed"]


@dataclass(frozen=True)
class WorkerState:
    """One step in a supervised worker's life; which fields are set depends on `kind`."""

    kind: StateKind
    service_id: str
    version: str
    pid: int | None = None  # ready
    port: int | None = None  # ready
    code: int | None = None  # crashed: the exit code, None when it never exited by itself
    delay: float | None = None  # backoff: seconds until the next start
    reason: str = ""  # crashed, failed
    restarts: int = 0  # how many times the worker was started again after the first time
    log_tail: tuple[str, ...] = ()  # crashed, failed: the worker's last lines of output


def next_backoff(previous: float | None, *, uptime: float,
                 initial: float = DEFAULT_BACKOFF_INITIAL_S,
                 maximum: float = DEFAULT_BACKOFF_MAX_S,
                 stable_after: float = DEFAULT_STABLE_AFTER_S,
                 factor: float = BACKOFF_FACTOR) -> float:
    """The delay before the next start: `initial` after the first crash or a run of
    `stable_after` seconds, else the previous delay times `factor`, capped at `maximum`."""
    if previous is None or uptime >= stable_after:
        return min(initial, maximum)
    return min(previous * factor, maximum)


class _OnStarted:
    """A task_status stand-in that calls back, so run_worker's errors reach us unwrapped."""

    def __init__(self, callback: Callable[[Any], None]):
        self._callback = callback

    def started(self, value: Any = None) -> None:
        self._callback(value)


async def supervise(spec: WorkerSpec, *, task_status=trio.TASK_STATUS_IGNORED,
                    on_state: Callable[[WorkerState], None] | None = None,
                    backoff_initial: float = DEFAULT_BACKOFF_INITIAL_S,
                    backoff_max: float = DEFAULT_BACKOFF_MAX_S,
                    stable_after: float = DEFAULT_STABLE_AFTER_S,
                    probe_interval_s: float = DEFAULT_PROBE_INTERVAL_S,
                    liveness_interval_s: float = DEFAULT_LIVENESS_INTERVAL_S,
                    liveness_failures: int = DEFAULT_LIVENESS_FAILURES) -> None:
    """Run the worker until cancelled, restarting it with exponential backoff when it dies.

    `task_status.started(handle)` once the first start is healthy. `on_state`
    is called synchronously for each state change and must not block (to
    feed a channel, pass `send_channel.send_nowait` on a buffered channel).

    Cancellation: stops the worker (SIGTERM, then SIGKILL after
    `spec.grace_s`), reports `stopped`, and re-raises.

    Error handling: if the first start fails, reports `failed` and raises
    WorkerStartFailed (reason, code, log_tail: what an agent needs to revert
    and report). Later deaths, including failed restarts, are retried forever.
    """
    report = on_state or (lambda state: None)
    state = partial(WorkerState, service_id=spec.service_id, version=spec.version)
    first = True
    restarts = 0
    delay: float | None = None
    ready_at: float | None = None

    def ready(handle: WorkerHandle) -> None:
        nonlocal ready_at
        ready_at = trio.current_time()
        report(state("ready", pid=handle.pid, port=handle.port, restarts=restarts))
        if first:
            task_status.started(handle)

    try:
        while True:
            report(state("starting", restarts=restarts))
            ready_at = None
            try:
                await run_worker(spec, task_status=_OnStarted(ready),
                                 probe_interval_s=probe_interval_s,
                                 liveness_interval_s=liveness_interval_s,
                                 liveness_failures=liveness_failures)
            except WorkerStartFailed as error:
                if first:
                    report(state("failed", code=error.code, reason=error.reason,
                                 log_tail=tuple(error.log_tail)))
                    raise
                crash: WorkerStartFailed | WorkerExited | WorkerUnhealthy = error
            except (WorkerExited, WorkerUnhealthy) as error:
                crash = error
            else:  # pragma: no cover - run_worker only ends by raising
                raise AssertionError("run_worker returned")
            first = False
            uptime = 0.0 if ready_at is None else trio.current_time() - ready_at
            delay = next_backoff(delay, uptime=uptime, initial=backoff_initial,
                                 maximum=backoff_max, stable_after=stable_after)
            report(state("crashed", code=crash.code, reason=crash.reason,
                         restarts=restarts, log_tail=tuple(crash.log_tail)))
            report(state("backoff", delay=delay, restarts=restarts))
            await trio.sleep(delay)
            restarts += 1
    except BaseException as error:
        if _only_cancelled(error):
            report(state("stopped", restarts=restarts))
        raise


def _only_cancelled(error: BaseException) -> bool:
    if isinstance(error, trio.Cancelled):
        return True
    if isinstance(error, BaseExceptionGroup):
        return error.split(trio.Cancelled)[1] is None
    return False
