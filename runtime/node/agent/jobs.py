"""A node's side of job steps: `job_attempt` / `job_cancel` in, `job_report` / `job_log` out.

The runner keeps an `EpochFence` (an attempt or cancel from an older leader epoch is refused
with a `failed` report naming both epochs), installs the step's bundle through `install`
(the node's package manager), runs the command in the installed tree as
`LocalCommandExecutor` does (own process group, the workers' environment, the job contract,
a bounded rotated log), streams the log's new bytes as `job_log`, uploads the files the
command left under FLOWCTL_OUTPUT_DIR as the attempt's artifacts (checked against the plane's
limits first: one over them, or a symlink out of the dir, fails the attempt naming it) and ends
with one `job_report`. A broadcast shard (`shard` set) gets FLOWCTL_SHARD_INDEX/TOTAL and its
own directory (`STEP.ATTEMPT.shardK`); its messages carry the shard. `running()` lists the
attempts still running, for a node to report them on reconnect so that a restarted plane
re-attaches them instead of running them again. A `job_attempts` batch is handled entry by
entry, each fenced on its own (`handle_batch`).

`AgentJobs` wires a runner into a node agent: one per `run_agent` (attempts outlive a control
session), its messages sent through the current session and buffered (bounded) between
sessions (`JobOutbox`, runtime/node/agent/job_outbox.py: batched for a plane that takes
batches), the bundle installed by the node's package manager, and the process groups of
attempts a previous agent process left behind (killed with it) stopped when it starts.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import msgspec
import trio

from runtime.control import messages
from runtime.control.job_batches import unpack_attempts
from runtime.control.messages import (
    JobAttempt,
    JobAttempts,
    JobCancel,
    JobLog,
    JobReport,
    Welcome,
)
from runtime.jobs.artifacts import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_TOTAL_BYTES,
    ArtifactError,
    ArtifactLimits,
)
from runtime.jobs.dispatch import AttemptOrder, Outcome
from runtime.jobs.errors import StaleEpoch
from runtime.jobs.lease import EpochFence
from runtime.jobs.local_command import DEFAULT_GRACE_S, PGID_FILE, LocalCommandExecutor
from runtime.jobs.model import CommandStep
from runtime.jobs.output_files import OutputFile, collect_outputs
from runtime.node.agent.job_outbox import JobOutbox
from runtime.node.workers.pgroups import group_alive, stop_group
from runtime.tunnel import Mux

log = logging.getLogger("flowctl.node.jobs")
LOG_POLL_S = 0.2
# A command that ends within this long is reported once, its final report standing for "running"
# too: one frame instead of two for the many short steps (the plane accepts dispatched -> end).
RUNNING_REPORT_DELAY_S = 0.05
INSTALLED_TTL_S = 300.0  # how long an installed bundle is used without asking the package manager again
MAX_LOG_MESSAGE = 64 * 1024
# Ended attempts remembered with their final report: one sent again (a new leader re-sending
# what a dead one dispatched, its record of the send lost) is answered with how it ended, not run
# a second time. 10,000 is hours of a busy node's steps, about 3 MB.
ENDED_KEPT = 10_000
# (service, version) -> the installed bundle tree, or (tree, its requirements venv or None)
Install = Callable[[str, str], Awaitable[Path | tuple[Path, str | None]]]
Send = Callable[[JobReport | JobLog], Awaitable[None]]
Upload = Callable[[JobAttempt, list[OutputFile]], Awaitable[None]]  # ArtifactError when refused
Key = tuple[str, str, int, int | None]  # run, step, attempt, shard


@dataclass
class _Running:
    message: JobAttempt
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    reason: str = ""
    started: bool = False
    ended: bool = False  # its final report is on its way: no `running` report after it


class NodeJobRunner:
    """Runs the job step attempts a plane sends to this node; `await nursery.start(runner.run)`."""

    def __init__(self, data_dir: Path, install: Install, send: Send, *, grace_s: float = DEFAULT_GRACE_S,
                 node: str = "", upload: Upload | None = None):
        self.data_dir, self.install, self.send, self.grace_s, self.node = data_dir, install, send, grace_s, node
        self.upload = upload  # None: outputs stay on this node (no plane to take them)
        self.fence = EpochFence()
        self._running: dict[Key, _Running] = {}
        self._offsets: dict[Key, int] = {}  # how much of each attempt's log was sent
        self._ended: OrderedDict[Key, JobReport] = OrderedDict()  # see ENDED_KEPT
        # (service, version) -> (what install gave, when): the package manager's check (a hub
        # request) is skipped for a bundle installed a moment ago whose tree is still there.
        self._installed: dict[tuple[str, str], tuple[Path | tuple[Path, str | None], float]] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the attempts' tasks until cancelled (which stops every attempt's process group)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def running(self) -> list[JobReport]:
        """A `running` report of each attempt still running (sent again after a reconnect)."""
        return [JobReport(m.run_id, m.step, m.attempt, m.epoch, "running", shard=m.shard)
                for r in self._running.values() if r.started for m in [r.message]]

    async def handle(self, message: JobAttempt | JobCancel) -> None:
        """Start or cancel an attempt; a stale epoch is refused with a `failed` report."""
        assert self._nursery is not None, "NodeJobRunner.run is not running"
        try:
            self.fence.check(message.epoch)
        except StaleEpoch as e:
            await self.send(JobReport(message.run_id, message.step, message.attempt, message.epoch, "failed",
                                      reason=str(e), shard=message.shard))
            return
        key = (message.run_id, message.step, message.attempt, message.shard)
        if isinstance(message, JobCancel):
            if (running := self._running.get(key)) is not None:
                running.reason = message.reason or "cancelled by the plane"
                running.scope.cancel()
            return
        if key in self._running:
            return  # sent again (a reconnect): it runs once
        if (ended := self._ended.get(key)) is not None:  # sent again after it ended: its end again
            await self.send(msgspec.structs.replace(ended, epoch=message.epoch))
            return
        if message.resend and (self.data_dir / message.run_id / f"{message.step}.{message.attempt}"
                                                           f"{_suffix(message)}").exists():
            # Started by an earlier agent process of this node, whose processes were stopped with it.
            await self.send(JobReport(message.run_id, message.step, message.attempt, message.epoch, "lost",
                                      reason="this node's agent restarted while the attempt ran; its processes "
                                             "were stopped", shard=message.shard))
            return
        self._running[key] = _Running(message)
        self._nursery.start_soon(self._attempt, key)

    async def handle_batch(self, batch: JobAttempts) -> None:
        """Each attempt of a `job_attempts` batch as `handle` takes it, in order (each fenced on its
        own); a bad entry is refused alone (a `failed` report when it names its attempt), a bad
        batch as a whole, logged: the session and its other messages go on."""
        attempts, refused = unpack_attempts(batch)
        for attempt in attempts:
            await self.handle(attempt)
        for bad in refused:
            log.warning("refused from a job_attempts batch: %s", bad.reason)
            if bad.key is not None and bad.key not in self._running:
                run_id, step, number, shard = bad.key
                await self.send(JobReport(run_id, step, number, bad.epoch, "failed", reason=bad.reason[:500],
                                          shard=shard))

    async def _attempt(self, key: Key) -> None:
        running = self._running[key]
        m = running.message
        try:
            outcome = await self._run(running)
        except Exception as e:  # a node must not die of one step; the plane learns why
            log.exception("job %s step %s attempt %d", m.run_id, m.step, m.attempt)
            outcome = Outcome("failed", reason=f"node error: {e!r}"[:500])
        finally:
            running.ended = True
            self._running.pop(key, None)
            self._offsets.pop(key, None)
            # Ended here: its group id must not be swept at the next start (the pid may be reused).
            pgid = self.data_dir / m.run_id / f"{m.step}.{m.attempt}{_suffix(m)}" / PGID_FILE
            pgid.unlink(missing_ok=True)  # one syscall: on the loop
        report = JobReport(m.run_id, m.step, m.attempt, m.epoch, outcome.state,
                           exit_code=outcome.exit_code, reason=outcome.reason, shard=m.shard)
        self._ended[key] = report
        while len(self._ended) > ENDED_KEPT:
            self._ended.popitem(last=False)
        with trio.CancelScope(shield=True):
            await self.send(report)

    async def _run(self, running: _Running) -> Outcome:
        m = running.message
        with running.scope:
            try:
                installed = await self._install(m.service_id, m.version)
            except Exception as e:
                return Outcome("failed", reason=f"cannot install {m.service_id}@{m.version}: {e}"[:500])
            tree, venv = installed if isinstance(installed, tuple) else (installed, None)
            # The bundle's environment: its venv's interpreter and tools first (the step's env may override).
            env = {"PATH": f"{venv}/bin:{os.environ.get('PATH', '/usr/bin:/bin')}", "VIRTUAL_ENV": venv} if venv else {}
            env.update(m.env)
            if m.shard is not None:
                env.update(FLOWCTL_SHARD_INDEX=str(m.shard), FLOWCTL_SHARD_TOTAL=str(m.shard_total or 0))
            executor = LocalCommandExecutor(self.data_dir, workdir=tree, grace_s=self.grace_s, node=self.node,
                                            suffix=_suffix(m))
            step = CommandStep(name=m.step, service=f"{m.service_id}@{m.version}", command=tuple(m.command),
                               env=tuple(sorted(env.items())))
            order = AttemptOrder(m.run_id, m.tenant, m.job, step, m.attempt, m.epoch, dict(m.params), m.timeout_s)

            async def started(node: str | None) -> None:
                running.started = True
                nursery.start_soon(self._report_running, running)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._stream_log, executor.log_path(m.run_id, m.step, m.attempt), m)
                with trio.move_on_after(m.timeout_s if m.timeout_s is not None else float("inf")) as timer:
                    outcome = await executor.run_attempt(order, started)
                nursery.cancel_scope.cancel()
            await self._send_log_tail(executor.log_path(m.run_id, m.step, m.attempt), m)
            if timer.cancelled_caught:
                return Outcome("timed_out", reason=f"timed out after {m.timeout_s:g} s", node=self.node)
            if outcome.state in ("succeeded", "failed") and self.upload is not None:
                output_dir = executor.log_path(m.run_id, m.step, m.attempt).parent / "output"
                try:
                    await self._upload(m, output_dir)
                except ArtifactError as e:
                    if outcome.state == "succeeded":
                        return Outcome("failed", exit_code=outcome.exit_code, reason=f"artifacts: {e}",
                                       node=self.node)
            return outcome
        return Outcome("cancelled", reason=running.reason or "cancelled", node=self.node)

    async def _install(self, service: str, version: str) -> Path | tuple[Path, str | None]:
        """`install`, or what it gave a moment ago while that tree is still there."""
        key = (service, version)
        cached = self._installed.get(key)
        if cached is not None and trio.current_time() - cached[1] < INSTALLED_TTL_S:
            tree = cached[0][0] if isinstance(cached[0], tuple) else cached[0]
            if tree.is_dir():
                return cached[0]
        installed = await self.install(service, version)
        self._installed[key] = (installed, trio.current_time())
        return installed

    async def _report_running(self, running: _Running) -> None:
        """Say the attempt runs, unless it ends first (its final report then says both)."""
        await trio.sleep(RUNNING_REPORT_DELAY_S)
        if not running.ended:
            m = running.message
            await self.send(JobReport(m.run_id, m.step, m.attempt, m.epoch, "running", shard=m.shard))

    async def _upload(self, m: JobAttempt, output_dir: Path) -> None:
        """Check the output dir against the plane's limits, then upload it (ArtifactError if refused)."""
        assert self.upload is not None
        limits = ArtifactLimits(max_file_bytes=m.max_artifact_bytes or DEFAULT_MAX_FILE_BYTES,
                                max_total_bytes=m.max_artifacts_total or DEFAULT_MAX_TOTAL_BYTES)
        try:
            if not _has_entries(output_dir):  # the common case, on the loop: nothing to hash
                return
            files = await trio.to_thread.run_sync(collect_outputs, output_dir, limits)
        except OSError as e:
            raise ArtifactError(f"cannot read the output dir: {e}") from None
        if files:
            await self.upload(m, files)

    async def _stream_log(self, path: Path, m: JobAttempt) -> None:
        while True:
            await self._send_log_tail(path, m)
            await trio.sleep(LOG_POLL_S)

    async def _send_log_tail(self, path: Path, m: JobAttempt) -> None:
        """Send what the log gained since the last call (from its start again if it was rotated)."""
        key = (m.run_id, m.step, m.attempt, m.shard)
        offset = self._offsets.get(key, 0)
        data, offset = _read_from(path, offset)  # at most 64 KiB of a file just written: on the loop
        self._offsets[key] = offset
        if data:
            await self.send(JobLog(m.run_id, m.step, m.attempt, data.decode("utf-8", "replace"), shard=m.shard))


def _suffix(m: JobAttempt) -> str:
    """After `STEP.ATTEMPT` in a shard's directory: two shards of one attempt may share a node."""
    return "" if m.shard is None else f".shard{m.shard}"


def _has_entries(directory: Path) -> bool:
    try:
        with os.scandir(directory) as entries:
            return next(entries, None) is not None
    except FileNotFoundError:
        return False


def _read_from(path: Path, offset: int) -> tuple[bytes, int]:
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            if size < offset:
                offset = 0
            f.seek(offset)
            data = f.read(MAX_LOG_MESSAGE)
            return data, offset + len(data)
    except FileNotFoundError:
        return b"", offset


class AgentJobs:
    """A node agent's job steps: a runner, its outbox, and the package manager as `install`."""

    def __init__(self, data_dir: Path, install: Install, *, node: str = "", grace_s: float = DEFAULT_GRACE_S,
                 upload: Upload | None = None):
        self.data_dir = data_dir
        self.outbox = JobOutbox()
        self.runner = NodeJobRunner(data_dir, install, self.outbox.send, grace_s=grace_s, node=node, upload=upload)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Stop what a previous agent process left running, then run attempts until cancelled."""
        await sweep_orphans(self.data_dir, grace_s=self.runner.grace_s)
        await self.runner.run(task_status=task_status)

    async def attach(self, mux: Mux, welcome: Welcome | None = None) -> None:
        """After each welcome: flush, then report what still runs (in batches if the plane takes them)."""
        batch = welcome is not None and messages.JOB_BATCH in welcome.features
        await self.outbox.attach(mux, self.runner.running(), batch=batch)

    def detach(self, mux: Mux) -> None:
        """The session ended."""
        self.outbox.detach(mux)

    async def handle(self, message: JobAttempt | JobCancel | JobAttempts) -> None:
        """A plane's job message."""
        if isinstance(message, JobAttempts):
            await self.runner.handle_batch(message)
        else:
            await self.runner.handle(message)


async def sweep_orphans(data_dir: Path, *, grace_s: float) -> int:
    """Stop the live process groups named by attempts' pgid files under `data_dir` (left by an
    agent process that was killed); returns how many. The files go, so each is stopped once."""
    found = await trio.to_thread.run_sync(lambda: sorted(data_dir.glob(f"*/*/{PGID_FILE}")))
    stopped = 0
    for path in found:
        text = await trio.to_thread.run_sync(path.read_text)
        if text.strip().isdigit() and (pgid := int(text)) > 1 and await group_alive(pgid):
            log.warning("stopping job process group %d left by a previous agent (%s)", pgid, path.parent)
            await stop_group(pgid, grace_s=grace_s)
            stopped += 1
        await trio.to_thread.run_sync(partial(path.unlink, missing_ok=True))
    return stopped
