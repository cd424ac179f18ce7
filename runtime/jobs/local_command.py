"""A `StepExecutor` for `command` steps on this machine: each attempt one child process in its
own process group, stopped as workers are (SIGTERM, a grace period, SIGKILL to the group).

A node's runner (runtime.node.agent.jobs) uses it with the bundle's installed tree as `workdir`
and its venv first on PATH; a plane without the scheduler role uses it directly. The child's environment is the
workers' allow-list (never the plane's or node's secrets), the step's `env`, and the job
contract: FLOWCTL_RUN_ID, FLOWCTL_JOB, FLOWCTL_STEP, FLOWCTL_ATTEMPT, FLOWCTL_EPOCH,
FLOWCTL_OUTPUT_DIR, FLOWCTL_PARAM_<NAME> per parameter. Output goes to a bounded, rotated log
per attempt (`runtime.jobs.steplog`). Given an `ArtifactStore` (a plane without the scheduler
role), the files left under FLOWCTL_OUTPUT_DIR become the attempt's artifacts once the command
ended (`runtime.jobs.output_files`); one refused (too large, a symlink out of the dir) fails it.
"""

from __future__ import annotations

import os
import subprocess
from functools import partial
from pathlib import Path

import trio

from hub_store.errors import StoreError
from runtime.jobs.artifacts import ArtifactError, ArtifactStore
from runtime.jobs.dispatch import AttemptOrder, Outcome, Started
from runtime.jobs.lease import EpochFence
from runtime.jobs.model import CommandStep
from runtime.jobs.output_files import OutputFile, collect_outputs
from runtime.jobs.steplog import DEFAULT_MAX_BYTES, StepLog, pump
from runtime.node.workers.pgroups import group_alive, stop_group, terminate_group
from runtime.node.workers.workerenv import inherited_env

DEFAULT_GRACE_S = 5.0
DRAIN_S = 2.0
PGID_FILE = "pgid"


class LocalCommandExecutor:
    """Runs command steps as local child processes; logs and outputs under `data_dir`."""

    def __init__(self, data_dir: Path, *, workdir: Path | None = None, grace_s: float = DEFAULT_GRACE_S,
                 node: str = "local", log_max_bytes: int = DEFAULT_MAX_BYTES,
                 artifacts: ArtifactStore | None = None, suffix: str = ""):
        self.data_dir, self.workdir, self.grace_s, self.node = data_dir, workdir, grace_s, node
        self.log_max_bytes, self.artifacts = log_max_bytes, artifacts
        self.suffix = suffix  # after `STEP.ATTEMPT` in the attempt's directory: a node's broadcast shard
        self.fence = EpochFence()

    def attempt_dir(self, order: AttemptOrder) -> Path:
        """Where an attempt's log (`log`) and outputs (`output/`) go."""
        return self.log_path(order.run_id, order.step.name, order.attempt).parent

    def log_path(self, run_id: str, step: str, attempt: int) -> Path:
        """An attempt's log file (the part before rotation is beside it, `log.1`)."""
        return self.data_dir / run_id / f"{step}.{attempt}{self.suffix}" / "log"

    async def run_attempt(self, order: AttemptOrder, started: Started) -> Outcome:
        """Start the command, report it running, wait for its exit code.

        Cancellation: SIGTERM to the group, SIGKILL after `grace_s`; whatever the command left
        in its group is stopped the same way before this returns.
        """
        self.fence.check(order.epoch)
        step = order.step
        if not isinstance(step, CommandStep):
            return Outcome("failed", reason=f"{step.kind} steps do not run as local commands")
        where = self.attempt_dir(order)
        # A directory and two small files, on the loop: each worker-thread trip costs more than these
        # syscalls (tens of ms on a loaded machine), and a `true` step is made of little else.
        (where / "output").mkdir(parents=True, exist_ok=True)
        log = StepLog(where / "log", max_bytes=self.log_max_bytes)
        # Shielded so the log keeps what the command says while it is stopped; the deadline set
        # once it exited bounds it if something outside its group still holds the pipe.
        pump_scope = trio.CancelScope(shield=True)
        try:
            async with trio.open_nursery() as nursery:
                try:
                    proc = await nursery.start(partial(
                        trio.run_process, list(step.command), check=False, cwd=self.workdir,
                        env=self._env(order, where / "output"), stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                        deliver_cancel=partial(terminate_group, grace_s=self.grace_s)))
                except OSError as e:
                    what = "command not found" if isinstance(e, FileNotFoundError) else "cannot start command"
                    return Outcome("failed", reason=f"{what}: {step.command[0]!r} ({e.strerror})", node=self.node)
                nursery.start_soon(_pump, proc.stdout, log, pump_scope)
                # Where a later plane process finds this group if this one dies (SIGKILL) first.
                (where / PGID_FILE).write_text(f"{proc.pid}\n")
                await started(self.node)
                try:
                    code = await proc.wait()
                finally:
                    with trio.CancelScope(shield=True):
                        await proc.wait()
                        await stop_group(proc.pid, grace_s=self.grace_s)
                    pump_scope.deadline = trio.current_time() + DRAIN_S
        finally:
            log.close()
        if code == 0:
            return await self._keep_outputs(order, where / "output", Outcome("succeeded", exit_code=0, node=self.node))
        await self._keep_outputs(order, where / "output", Outcome("failed"))
        tail = await trio.to_thread.run_sync(log.last_line)
        reason = f"exit code {code}" if code > 0 else f"killed by signal {-code}"
        return Outcome("failed", exit_code=code, reason=reason + (f": {tail}" if tail else ""), node=self.node)

    async def recover(self, order: AttemptOrder, started: Started) -> Outcome | None:
        """A process started by a previous plane process is not ours to wait for: its group is
        stopped (so a retry never runs beside it) and the attempt is lost."""
        pgid_file = self.attempt_dir(order) / PGID_FILE
        try:
            text = await trio.to_thread.run_sync(pgid_file.read_text)
        except (FileNotFoundError, NotADirectoryError):
            return None
        # A pid is not reused while its process group has members, so a live group is still ours.
        if text.strip().isdigit() and (pgid := int(text)) > 1 and await group_alive(pgid):
            await stop_group(pgid, grace_s=self.grace_s)
        return None

    async def _keep_outputs(self, order: AttemptOrder, output_dir: Path, outcome: Outcome) -> Outcome:
        """Record the files under `output_dir` as the attempt's artifacts (with an ArtifactStore);
        a refused one fails a succeeded attempt with the reason."""
        store = self.artifacts
        if store is None:
            return outcome
        try:
            files = await trio.to_thread.run_sync(collect_outputs, output_dir, store.limits)
            await trio.to_thread.run_sync(_record, store, order, files)
        except (ArtifactError, StoreError, OSError) as e:  # StoreError: a file changed while it was stored
            if outcome.state == "succeeded":
                return Outcome("failed", exit_code=outcome.exit_code, reason=f"artifacts: {e}", node=self.node)
        return outcome

    def _env(self, order: AttemptOrder, output_dir: Path) -> dict[str, str]:
        assert isinstance(order.step, CommandStep)
        env = inherited_env(os.environ)
        env.update(dict(order.step.env))
        env.update({"FLOWCTL_RUN_ID": order.run_id, "FLOWCTL_JOB": order.job, "FLOWCTL_STEP": order.step.name,
                    "FLOWCTL_ATTEMPT": str(order.attempt), "FLOWCTL_EPOCH": str(order.epoch),
                    "FLOWCTL_OUTPUT_DIR": str(output_dir)})
        for name, value in order.params.items():
            env[f"FLOWCTL_PARAM_{name.upper().replace('-', '_').replace('.', '_')}"] = (
                str(value).lower() if isinstance(value, bool) else str(value))
        return env



def _record(store: ArtifactStore, order: AttemptOrder, files: list[OutputFile]) -> None:
    for f in files:
        store.store_file(f.source, expected=f.digest)
    store.record(order.run_id, order.step.name, order.attempt, [(f.path, f.digest, f.size) for f in files])


async def _pump(stream: trio.abc.ReceiveStream, log: StepLog, scope: trio.CancelScope) -> None:
    with scope:
        await pump(stream, log)
