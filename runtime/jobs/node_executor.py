"""A `StepExecutor` that runs `command` steps on the cluster's nodes over their control links.

Each attempt goes to one connected node whose labels match the step's `selector` (the least
loaded: this plane's attempts on it plus its in-flight requests; ties by name). While none
matches, the attempt waits with its reason recorded (`pending: no node with labels gpu=a100`).
The node gets a `job_attempt` carrying the leader epoch (batched per node and round: node_sends.py),
answers `job_report`s (running, then one final) and streams `job_log` pieces, appended to the
attempt's log here. A node that the
registry declares lost (its lost-node timeout, or its connection closed) loses its attempts
(`lost`), which the engine retries per policy. After a plane restart or a change of job leader
`recover` re-attaches an attempt to its node, or sends it there again (runtime/jobs/node_recovery.py). A report
for an attempt nobody waits for is recorded beside the attempt (`late_result`) when it is final,
and a stale process still running is told to stop.
Broadcast steps run shard k of N on each matching node (runtime/jobs/broadcast.py); a node
uploads an attempt's artifacts to the plane's HTTP API while `expects` says it runs it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from runtime.control import messages
from runtime.control.messages import Heartbeat, JobAttempt, JobCancel, JobLog, JobReport
from runtime.jobs.artifacts import ArtifactStore
from runtime.jobs.attempt_logs import append_log, prefixed
from runtime.jobs.broadcast import recover_broadcast, run_broadcast
from runtime.jobs.dispatch import AttemptOrder, Outcome, Started
from runtime.jobs.model import CommandStep, Resources
from runtime.jobs.node_choice import Key, LiveAttempts, NodeChoosing, _Live
from runtime.jobs.node_recovery import NodeRecovery, _Claim
from runtime.jobs.node_sends import AttemptSends
from runtime.jobs.offload import BatchedOffload
from runtime.jobs.prepared_sends import PreparedSends
from runtime.jobs.shards import ShardRecords
from runtime.jobs.states import LIVE_ATTEMPT
from runtime.jobs.steplog import DEFAULT_MAX_BYTES
from runtime.jobs.store import RunStore
from runtime.tunnel import TunnelError

if TYPE_CHECKING:
    from runtime.scheduler.registry import NodeRecord, NodeState
    from runtime.scheduler.service import Scheduler

log = logging.getLogger("flowctl.jobs")
VersionLookup = Callable[[str, str], Awaitable[str | None]]  # (service, channel) -> version
CANCEL_WAIT_S = 10.0
DEFAULT_REATTACH_S = 60.0
CHANNELS = ("stable", "latest")


class NodeExecutor(NodeRecovery, NodeChoosing):
    """Runs command steps on nodes through `scheduler`; see the module docstring."""

    def __init__(self, scheduler: Scheduler, store: RunStore, data_dir: Path, *,
                 lookup: VersionLookup | None = None, reattach_s: float = DEFAULT_REATTACH_S,
                 log_max_bytes: int = DEFAULT_MAX_BYTES, artifacts: ArtifactStore | None = None):
        self.scheduler, self.store, self.data_dir = scheduler, store, data_dir
        self.artifacts = artifacts  # where nodes' uploads go (runtime.jobs.artifact_routes)
        self.shards = ShardRecords(store.state or store.path)  # beside the runs, on either engine
        self.reattach_s, self.log_max_bytes = reattach_s, log_max_bytes
        if lookup is None:
            from runtime.scheduler.resolver import hub_channel_resolver

            lookup = hub_channel_resolver(lambda: scheduler.hub_url)
        self._lookup = lookup
        self._live = LiveAttempts()
        self._matching = {}
        self._db = BatchedOffload(store.group, inline=True)  # small per-attempt notes: no thread hop
        self._sends = AttemptSends(scheduler.mux_for, self._batching)
        self._prepared = PreparedSends(self._sends, self._mark_dispatched)  # fires prepared ahead, at their time
        self._turns: dict[tuple[str, str, str], int] = {}  # round_robin: the last node given, per step
        self._unclaimed: dict[Key, tuple[str, JobReport]] = {}  # running reports nobody waits for yet
        self._heard: set[str] = set()  # nodes that heartbeated since this plane process started
        self._claims: dict[str, _Claim] = {}  # node -> the claim of its job link by this plane's leader epoch
        self._abandoned: dict[str, set[Key]] = {}  # attempts recorded lost with their node, to stop on its return
        self._changed = trio.Event()
        self._epoch = 0
        self._logs_send, self._logs_receive = trio.open_memory_channel[tuple[Key, str]](math.inf)
        self._nursery: trio.Nursery | None = None
        self._closing = False  # the plane is stopping: attempts stay on their nodes, to re-attach
        scheduler.registry.subscribe(self._node_changed)

    def log_path(self, run_id: str, step: str, attempt: int, shard: int | None = None) -> Path:
        """An attempt's log here (what its node streamed); `log.1` beside it after rotation. A
        broadcast shard's own is `shard-K/log` beside it; the attempt's log has every shard's lines."""
        where = self.data_dir / run_id / f"{step}.{attempt}"
        return where / "log" if shard is None else where / f"shard-{shard}" / "log"

    def expects(self, node_id: str, run_id: str, step: str, attempt: int, shard: int | None) -> bool:
        """Whether `node_id` runs that attempt (or shard) for this plane now: it may upload its artifacts."""
        live = self._live.get((run_id, step, attempt, shard))
        return live is not None and live.node == node_id

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write logs and settle unclaimed reports until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._write_logs)
            nursery.start_soon(self._prepared.run)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._closing = True
                self.shards.close()

    # -- from nodes (called synchronously by the node connection) ------------------------------

    def on_message(self, node_id: str, message: JobReport | JobLog | Heartbeat) -> None:
        """A node's job_report / job_log, or its heartbeat (its running list is complete)."""
        if isinstance(message, Heartbeat):
            if node_id not in self._heard:
                self._heard.add(node_id)
                self._wake()
            if (claim := self._claims.get(node_id)) is not None and not claim.done.is_set():
                claim.beats -= 1
                if claim.beats <= 0:
                    claim.done.set()
            return
        key = (message.run_id, message.step, message.attempt, message.shard)
        if isinstance(message, JobLog):
            self._logs_send.send_nowait((key, message.data))
            return
        live = self._live.get(key)
        if live is not None and live.node == node_id:
            live.put(message)
        elif self._nursery is not None:
            if message.state == "running":
                self._unclaimed[key] = (node_id, message)  # for a recover about to start; checked below
            self._nursery.start_soon(self._unclaimed_report, node_id, message)

    def _node_changed(self, node: NodeRecord, before: NodeState) -> None:
        if node.state == "lost":
            self._heard.discard(node.node_id)
            if (claim := self._claims.pop(node.node_id, None)) is not None:
                claim.sent = False  # its waiters fall back to the node's next welcome
                claim.done.set()
            for key, live in self._live.items():
                if live.node == node.node_id:
                    live.put(Outcome("lost", reason=f"node {node.name} was lost", node=node.node_id))
                    self._abandoned.setdefault(node.node_id, set()).add(key)
        elif node.state == "ready" and (keys := self._abandoned.pop(node.node_id, None)) and self._nursery:
            # Back on the same connection (it was only silent): what it still runs was superseded.
            self._nursery.start_soon(self._stop_abandoned, node.node_id, keys)
        elif node.state == "gone":
            self._abandoned.pop(node.node_id, None)
        self._wake()

    async def _stop_abandoned(self, node_id: str, keys: set[Key]) -> None:
        for key in sorted(keys):
            try:
                await self._send(node_id, _cancel(key, self._epoch, "its node was lost; the attempt was superseded"))
            except TunnelError:
                return

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- StepExecutor --------------------------------------------------------------------------

    def holds_itself(self, order: AttemptOrder) -> bool:
        """Yes: a fire prepared ahead waits in `dispatch`, with its node chosen and noted, to be sent."""
        return True

    async def run_attempt(self, order: AttemptOrder, started: Started, *, node: str | None = None,
                          resend: bool = False) -> Outcome:
        """Choose a node (or send to `node`), send the attempt, wait for its final report (or its node's loss).

        Cancellation: the node is told to stop it (job_cancel) and its report awaited a while.
        """
        self._epoch = max(self._epoch, order.epoch)
        step = order.step
        if not isinstance(step, CommandStep):
            return Outcome("failed", reason=f"{step.kind} steps do not run on nodes")
        service, _, wanted = step.service.partition("@")
        version = wanted
        if wanted in CHANNELS:
            try:
                found = await self._lookup(service, wanted)
            except Exception as e:  # the hub cannot say (DeployError, UnknownService): the attempt fails
                return Outcome("failed", reason=f"cannot resolve {step.service}: {e}")
            if found is None:
                return Outcome("failed", reason=f"the hub has no {wanted} version of {service!r}")
            version = found
        limits = self.artifacts.limits if self.artifacts is not None else None
        message = JobAttempt(order.run_id, order.tenant, order.job, step.name, order.attempt, order.epoch,
                             service, version, tuple(step.command), dict(step.env), dict(order.params),
                             order.timeout, max_artifact_bytes=limits.max_file_bytes if limits else None,
                             max_artifacts_total=limits.max_total_bytes if limits else None, resend=resend)
        if order.routing.strategy == "broadcast":
            return await run_broadcast(self, order, step, message, started)
        return await self.dispatch(order, step, message, started, node=node)

    async def dispatch(self, order: AttemptOrder, step: CommandStep, message: JobAttempt, started: Started,
                       node: str | None = None) -> Outcome:
        """Send `message` to `node` (else the routing's choice, waiting for one) and wait for its end."""
        key = (order.run_id, step.name, order.attempt, message.shard)
        while True:
            if node is None:
                node = await self._choose(order, step)
            live = self._live[key] = _Live(node, step.resources)
            # Where it goes, recorded before it goes: a plane that dies right after the send leaves
            # its successor the node to ask (`recover`), never an attempt it cannot find.
            if message.shard is None:
                await self._db(partial(self.store.note_attempt, order.run_id, step.name, order.attempt, "",
                                       node=node))
            else:
                await trio.to_thread.run_sync(partial(self.shards.put, *key[:3], message.shard,
                                                      message.shard_total or 0, "dispatched", node=node))
            try:
                if order.not_before is not None:  # a fire prepared ahead: only the send waits for its time
                    await self._send_prepared(order, node, message)
                else:
                    await self._send(node, message)
            except TunnelError:
                del self._live[key]  # nothing runs it: that node went away meanwhile
                node = None
                continue
            except BaseException:  # cancelled (the run, a change to its job) before it was sent
                self._live.pop(key, None)
                raise
            break
        try:
            return await self._wait(key, live, started)
        finally:
            self._live.pop(key, None)
            if live.resources != Resources():  # what it reserved is free: waiting attempts may fit now
                self._changed.set()
                self._changed = trio.Event()

    async def _send_prepared(self, order: AttemptOrder, node: str, message: JobAttempt) -> None:
        """At the order's `not_before`: record the attempt dispatched, then send it (with the others
        due then, by one task: `run()` runs it)."""
        assert order.not_before is not None
        await self._prepared.send(order.not_before, node, message)

    async def _mark_dispatched(self, keys: list[tuple[str, str, int]]) -> None:
        await self._db(partial(self.store.mark_dispatched_many, keys, now=time.time()))

    async def recover(self, order: AttemptOrder, started: Started) -> Outcome | None:
        """Re-attach an attempt a previous plane process dispatched, when its node reports it."""
        self._epoch = max(self._epoch, order.epoch)
        if order.routing.strategy == "broadcast":
            return await recover_broadcast(self, order, started)
        return await self.recover_one(order, started)

    async def _wait(self, key: Key, live: _Live, started: Started) -> Outcome:
        receive = live.events[1]
        done = False
        try:
            async for item in receive:
                if item == "unreported":
                    done = True  # its node is back and does not run it: nothing to stop
                    return Outcome("lost")
                if isinstance(item, Outcome):
                    done = True
                    return item
                assert isinstance(item, JobReport)
                if item.state == "running":
                    await started(live.node)
                    continue
                done = True
                return Outcome(item.state, exit_code=item.exit_code, reason=item.reason, node=live.node)
            raise AssertionError("unreachable")
        finally:
            if not done:
                with trio.CancelScope(shield=True):
                    # A plane shutdown cancels run() in the same stroke; one checkpoint lets it say so.
                    await trio.lowlevel.checkpoint()
                    if not self._closing:
                        await self._stop(key, live, "cancelled by the plane")

    async def _stop(self, key: Key, live: _Live, reason: str) -> None:
        """Tell the node to stop the attempt; wait a while for it to say it did."""
        try:
            await self._send(live.node, _cancel(key, self._epoch, reason))
        except TunnelError:
            return
        with trio.move_on_after(CANCEL_WAIT_S):
            async for item in live.events[1]:
                if isinstance(item, Outcome) or (isinstance(item, JobReport) and item.state != "running"):
                    return

    # -- sending ---------------------------------------------------------------------------------

    def _batching(self, node_id: str) -> bool:
        return (node := self.scheduler.registry.get(node_id)) is not None and messages.JOB_BATCH in node.hello.features

    async def _send(self, node_id: str, message: JobAttempt | JobCancel) -> None:
        if isinstance(message, JobAttempt):
            await self._sends.send(node_id, message)
            return
        mux = self.scheduler.mux_for(node_id)
        if mux is None:
            raise TunnelError(f"node {node_id} is not connected")
        await mux.send_control(messages.encode(message))

    async def _unclaimed_report(self, node_id: str, report: JobReport) -> None:
        """A report nobody waits for: keep it for a recover to come, record it late, or stop it."""
        key = (report.run_id, report.step, report.attempt, report.shard)
        try:
            attempts = await trio.to_thread.run_sync(self.store.attempts, report.run_id, report.step)
        except Exception:  # a run since removed: nothing to record it on
            attempts = []
        record = next((a for a in attempts if a.attempt == report.attempt), None)
        where, total = (record.node if record is not None else None), 0
        if report.shard is not None:  # a broadcast shard: its own row says where it runs
            rows = await trio.to_thread.run_sync(self.shards.of, report.run_id, report.step, report.attempt)
            row = next((r for r in rows if r.shard == report.shard), None)
            where, total = (row.node, row.total) if row is not None else (None, 0)
        live = record is not None and record.state in LIVE_ATTEMPT and where == node_id
        if report.state == "running":
            if live:
                return  # left in _unclaimed: a restarted engine re-attaches it
            if self._unclaimed.get(key, (None, None))[1] is report:
                del self._unclaimed[key]
            why = (f"attempt {report.attempt} of step {report.step} was already settled "
                   f"({record.state if record else 'unknown'}); stop it")
            log.warning("node %s still runs %s/%s attempt %d: %s", node_id, report.run_id, report.step,
                        report.attempt, why)
            try:
                await self._send(node_id, _cancel(key, max(self._epoch, report.epoch), why))
            except TunnelError:
                pass
            return
        if record is not None and report.shard is not None:  # a late shard result: its row only
            if not live:
                return
            await trio.to_thread.run_sync(partial(
                self.shards.put, *key[:3], report.shard, total, report.state, node=node_id, exit_code=report.exit_code,
                reason=f"late: {report.reason}"))
        elif record is not None:
            await trio.to_thread.run_sync(partial(
                self.store.report_result, report.run_id, report.step, report.attempt, report.state,
                now=time.time(), node=node_id, exit_code=report.exit_code, reason=report.reason))

    async def _write_logs(self) -> None:
        async for key, data in self._logs_receive:
            run_id, step, attempt, shard = key
            if shard is not None:
                await trio.to_thread.run_sync(append_log, self.log_path(*key), data.encode(), self.log_max_bytes)
                data = prefixed(data, f"[shard {shard}] ")
            await trio.to_thread.run_sync(append_log, self.log_path(run_id, step, attempt), data.encode(),
                                          self.log_max_bytes)


def _cancel(key: Key, epoch: int, reason: str) -> JobCancel:
    return JobCancel(key[0], key[1], key[2], epoch=epoch, reason=reason, shard=key[3])

