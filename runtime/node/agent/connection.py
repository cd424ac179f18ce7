"""The node agent: one outbound WebSocket to the control plane, kept up for good.

The node dials out, so it works behind NAT. On every (re)connection it says
hello (identity, resources, what is installed and running), then heartbeats,
reports replica states as they change, applies each desired state the plane
sends through an `Executor` (install + supervise), and forwards the requests
tunnelled to it to the right worker on localhost.

The first join presents a join token; the plane's welcome then carries this
node's credential, which the agent keeps (`keep_credential`) and presents from
then on: it is bound to this node id, and the join token can never claim that id
again.

Connection failures are retried forever with exponential backoff and full
jitter; a refused join token or credential is not (it will not get better by
itself), and neither is a revoked credential: the agent never falls back to the
join token, which would undo the revocation. A connection the plane closed
because a newer one of this node replaced it is retried at once (once per
STABLE_AFTER, so two agents sharing one identity do not take turns in a hot loop).

A node may also run deployments of its own (`flowctl run DIR`, `LocalServices`): the
agent announces them after every welcome and on every change (`local`), hands the
plane's `local_verdict` back, and forwards `local:<service_id>` streams to them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

import trio
import trio_websocket

from runtime.control import messages
from runtime.control.messages import (
    REPLACED,
    REVOKED,
    Assign,
    Error,
    Heartbeat,
    Hello,
    InstalledVersion,
    JobAttempt,
    JobCancel,
    Local,
    LocalVerdict,
    ReplicaReport,
    Status,
    Welcome,
)
from runtime.exception_groups import boundary, collapse, describe, leaves
from runtime.node.agent import sysinfo
from runtime.node.agent.errors import JoinRefused
from runtime.node.agent.jobs import AgentJobs
from runtime.node.agent.log_tails import changed_tails
from runtime.node.agent.planes import PlaneLinks
from runtime.tunnel import MessageTransport, Mux, Stream, TunnelError, open_mux
from runtime.tunnel.http import forward_to_worker, send_error
from runtime.tunnel.worker_client import WorkerClient

log = logging.getLogger("flowctl.node")
CONNECT_PATH = "/api/cluster/connect"
WELCOME_TIMEOUT = 10.0
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 30.0
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class _Replaced(Exception):
    """The plane closed this connection: a newer connection of this node took over."""


class Executor(Protocol):
    """What the agent drives: the package manager and the supervisor behind one face."""

    def inventory(self) -> tuple[tuple[InstalledVersion, ...], tuple[ReplicaReport, ...]]:
        """Installed versions and the replicas running now (for hello)."""
        ...

    def apply(self, assign: Assign, hub_url: str, report: Callable[[ReplicaReport], None]) -> None:
        """Start converging on `assign` (without blocking); call `report` on every change."""
        ...

    def worker_url(self, replica_id: str) -> str | None:
        """http://127.0.0.1:PORT of a ready replica's worker, or None."""
        ...


class LocalServices(Protocol):
    """Deployments this node runs from its own files, announced to the plane (node-owned)."""

    def announcement(self) -> tuple[int, Local]:
        """A change counter and the complete set to announce now."""
        ...

    async def wait_changed(self, seen: int) -> None:
        """Return once the change counter is past `seen`."""
        ...

    def worker_url(self, replica_id: str) -> str | None:
        """http://127.0.0.1:PORT of a ready node-owned worker (`local:<service_id>`), or None."""
        ...

    def verdict(self, verdict: LocalVerdict) -> None:
        """The plane accepted or refused what was announced."""
        ...


@dataclass(frozen=True)
class AgentConfig:
    """How to reach the control plane and who this node is."""

    url: str
    token: str
    node_id: str
    name: str
    agent_version: str = "0"
    credential: str = ""  # once enrolled; preferred over `token`
    labels: Mapping[str, str] = field(default_factory=dict)  # matched by job step selectors
    backoff_initial: float = BACKOFF_INITIAL
    backoff_max: float = BACKOFF_MAX

    @property
    def ws_url(self) -> str:
        """The control plane's connect endpoint as a ws:// or wss:// URL."""
        base = self.url.rstrip("/")
        for http, ws in (("https://", "wss://"), ("http://", "ws://")):
            if base.startswith(http):
                base = ws + base[len(http):]
        return base if base.endswith(CONNECT_PATH) else base + CONNECT_PATH


Connect = Callable[[AgentConfig, str], AbstractAsyncContextManager[MessageTransport]]


def open_control_socket(config: AgentConfig, bearer: str) -> AbstractAsyncContextManager[MessageTransport]:
    """The WebSocket to the plane's connect endpoint, authenticated with `bearer`.

    Error handling: trio_websocket.ConnectionRejected for an HTTP refusal, OSError or
    HandshakeError when the plane cannot be reached.
    """
    return trio_websocket.open_websocket_url(
        config.ws_url, extra_headers=[(b"Authorization", f"Bearer {bearer}".encode("ascii"))],
        max_message_size=MAX_MESSAGE_BYTES, connect_timeout=10, disconnect_timeout=2,
    )


def backoff_delay(attempt: int, *, initial: float, maximum: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max, initial * 2**attempt)]."""
    return rng.uniform(0, min(maximum, initial * 2 ** min(attempt, 32)))


async def run_agent(config: AgentConfig, executor: Executor, *,
                    keep_credential: Callable[[str], None] | None = None,
                    connect: Connect = open_control_socket,
                    local: LocalServices | None = None, jobs: AgentJobs | None = None,
                    links: PlaneLinks | None = None,
                    task_status: trio.TaskStatus[Welcome] = trio.TASK_STATUS_IGNORED) -> None:
    """Keep the node connected until cancelled; `started(welcome)` after the first join.

    `keep_credential(credential)` (blocking; run in a thread) stores the credential the
    plane issues at this node's first join; the agent connects with it from then on.
    `connect(config, bearer)` opens one connection to the plane (a seam for tests).
    `local`: deployments of this node's own to announce (see the module docstring).
    `jobs`: the node's job steps (one for all sessions, already running): fed the plane's
    job_attempt / job_cancel, and re-attached (what still runs is reported) after each welcome.
    `links`: shared by the node's agents of every plane (runtime/node/agent/planes.py): the newest
    scheduler epoch seen (an older assign is refused: a deposed leader's), and every replica report
    goes out on every link.

    Error handling: connection problems are retried with backoff; JoinRefused is raised.
    """
    rng = random.Random()
    links = links or PlaneLinks()  # one for all sessions: the executor keeps the report callback
    attempt = 0
    started = False
    credential = config.credential
    replaced_at: float | None = None
    away_since: float | None = None  # when a joined node lost the plane, until it is welcomed back
    async with WorkerClient() as client:
        while True:
            began = trio.current_time()
            refused: JoinRefused | None = None
            retry_now = False
            what = "this node's credential" if credential else "the join token"
            # except*: the connection's tasks can fail together, so errors may come grouped.
            try:
                async with connect(config, credential or config.token) as ws, open_mux(ws, opener=True) as mux:

                    async def on_welcome(welcome: Welcome) -> None:
                        nonlocal started, credential, away_since
                        if away_since is not None:
                            # WARNING, like the loss: the default logging shows nothing below it.
                            log.warning("reconnected to the control plane after %.1f s",
                                        trio.current_time() - away_since)
                            away_since = None
                        if welcome.credential:
                            credential = welcome.credential  # reconnects use it even if keeping it fails
                            if keep_credential is not None:
                                await trio.to_thread.run_sync(keep_credential, welcome.credential)
                        if not started:
                            started = True
                            task_status.started(welcome)

                    await _session(config, executor, mux, client, on_welcome, local, jobs, links)
            except* JoinRefused as group:
                refused = next(leaves(group))
            except* trio_websocket.ConnectionRejected as group:
                rejected = next(leaves(group))
                status = rejected.status_code
                if status in (401, 403):
                    refused = JoinRefused(f"control plane at {config.url} refused {what} (HTTP {status}): "
                                          f"{_detail(rejected.body)}")
                else:
                    log.warning("control plane rejected the connection: HTTP %s", status)
            except* _Replaced as group:
                now = trio.current_time()
                retry_now = replaced_at is None or now - replaced_at > STABLE_AFTER
                replaced_at = now
                log.warning("%s; another agent may be using node id %s (a copied data dir?)",
                            group.exceptions[0], config.node_id)
            except* (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed,
                     TunnelError, messages.ProtocolError, trio.TooSlowError) as group:
                log.warning("control plane connection lost: %s", _reason(group))
            except* Exception as group:
                # A fault of this agent's own: reconnecting gives a fresh session, ending the
                # node would stop every worker on it.
                log.error("node session failed, reconnecting: %s", describe(group),
                          exc_info=group)
            if refused is not None:
                raise refused
            if started and away_since is None:
                away_since = trio.current_time()
            if retry_now:
                log.info("reconnecting at once")
                continue
            if trio.current_time() - began > STABLE_AFTER:
                attempt = 0
            delay = backoff_delay(attempt, initial=config.backoff_initial, maximum=config.backoff_max, rng=rng)
            attempt += 1
            log.info("reconnecting in %.1f s", delay)
            await trio.sleep(delay)


def _reason(group: BaseExceptionGroup) -> str:
    """Why a connection failed, one line; an empty wrapper (HandshakeError) names its cause."""
    found = [e.__cause__ if not str(e) and e.__cause__ is not None else e for e in leaves(group)]
    return "; ".join(describe(e) for e in found)


def _detail(body: bytes | None) -> str:
    """The reason in a refusal's JSON body ({"detail": ...}), as one line."""
    try:
        detail = json.loads(body or b"{}").get("detail")
    except (ValueError, AttributeError):
        detail = None
    return " ".join(str(detail).split()) if detail else "no reason given"


async def _session(config: AgentConfig, executor: Executor, mux: Mux, client: WorkerClient,
                   on_welcome: Callable[[Welcome], Awaitable[None]], local: LocalServices | None = None,
                   jobs: AgentJobs | None = None, links: PlaneLinks | None = None) -> None:
    installed, replicas = executor.inventory()
    total_mb, _ = sysinfo.memory_mb()
    hello = Hello(node_id=config.node_id, name=config.name, agent_version=config.agent_version,
                  cpu_count=sysinfo.cpu_count(), ram_mb=total_mb, gpus=await sysinfo.nvidia_gpus(),
                  installed=installed, replicas=replicas, labels=dict(config.labels), features=messages.FEATURES)
    await mux.send_control(messages.encode(hello))
    with trio.fail_after(WELCOME_TIMEOUT):
        first = messages.decode_plane_message(await mux.receive_control())
    if isinstance(first, Error):
        raise JoinRefused(f"control plane refused this node: {first.message}")
    if not isinstance(first, Welcome):
        raise JoinRefused(f"control plane answered {type(first).__name__.lower()} instead of welcome")
    welcome = first
    log.info("joined cluster %s as %s", welcome.cluster_id, config.name)
    await on_welcome(welcome)
    links = links or PlaneLinks()
    if jobs is not None:
        await jobs.attach(mux, welcome)
        links.jobs_mux = mux
    try:
        await _serve(config, executor, mux, client, welcome, local, jobs, links)
    finally:
        if jobs is not None:
            jobs.detach(mux)


async def _serve(config: AgentConfig, executor: Executor, mux: Mux, client: WorkerClient, welcome: Welcome,
                 local: LocalServices | None, jobs: AgentJobs | None, links: PlaneLinks) -> None:

    pending: dict[str, ReplicaReport] = {}
    reported = trio.lowlevel.ParkingLot()
    outstanding = 0

    def report(rep: ReplicaReport) -> None:
        # Only the latest state of a replica matters: coalesce, never queue without bound.
        pending[rep.replica_id] = rep
        reported.unpark_all()

    # The helper tasks end quietly when the connection ends; the main loop below reports why.
    async def send_reports() -> None:
        with contextlib.suppress(TunnelError):
            while True:
                while not pending:
                    await reported.park()
                _, rep = pending.popitem()
                await mux.send_control(messages.encode(Status(rep)))

    async def heartbeat() -> None:
        seq = 0
        sent_logs: dict[str, tuple[str, ...]] = {}  # what this connection's plane has of each tail
        with contextlib.suppress(TunnelError):
            while True:
                await trio.sleep(welcome.heartbeat_interval_s)
                seq += 1
                _, free = sysinfo.memory_mb()
                logs = await changed_tails(executor, sent_logs)
                beat = Heartbeat(seq=seq, free_ram_mb=free, outstanding=outstanding, logs=logs)
                await mux.send_control(messages.encode(beat))

    async def announce(local: LocalServices) -> None:
        sent: Local | None = None
        with contextlib.suppress(TunnelError):
            while True:
                seen, current = local.announcement()
                if current != sent:
                    await mux.send_control(messages.encode(current))
                    sent = current
                await local.wait_changed(seen)

    def worker_url(replica_id: str) -> str | None:
        if local is not None and replica_id.startswith("local:"):
            return local.worker_url(replica_id)
        return executor.worker_url(replica_id)

    async def forward(stream: Stream) -> None:
        nonlocal outstanding

        def failed(error: BaseException) -> None:
            # One request's failure ends that request only, never the session it runs in.
            log.warning("request on stream %d failed: %s", stream.id, describe(error))
            stream.reset("the node failed to relay this request")

        with boundary(failed):
            url = worker_url(str(stream.head.get("replica_id", "")))
            if url is None:
                with contextlib.suppress(TunnelError):
                    await send_error(stream, 503, f"replica {stream.head.get('replica_id')!r} is not running here")
                return
            outstanding += 1
            try:
                await forward_to_worker(stream, client, url)
            finally:
                outstanding -= 1

    with collapse(), links.attached(report):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_reports)
            nursery.start_soon(heartbeat)
            if local is not None:
                nursery.start_soon(announce, local)

            async def accept_streams() -> None:
                with contextlib.suppress(TunnelError):
                    while True:
                        nursery.start_soon(forward, await mux.accept_stream())

            nursery.start_soon(accept_streams)
            while True:
                message = messages.decode_plane_message(await mux.receive_control())
                if isinstance(message, Assign):
                    if links.admit(message.epoch, config.url):
                        executor.apply(message, welcome.hub_url, links.report)
                elif isinstance(message, JobAttempt | JobCancel | messages.JobAttempts):
                    if jobs is not None:
                        if links.jobs_mux is not mux:  # several planes: reports go where the jobs leader is
                            links.jobs_mux = mux
                            await jobs.attach(mux, welcome)
                        await jobs.handle(message)
                elif isinstance(message, LocalVerdict):
                    if local is not None:
                        local.verdict(message)
                elif isinstance(message, Error):
                    log.error("control plane: %s", message.message)
                    if message.fatal and message.code == REVOKED:
                        raise JoinRefused(f"control plane at {config.url} revoked this node: {message.message}")
                    if message.fatal and message.code == REPLACED:
                        raise _Replaced(f"control plane closed this connection: {message.message}")
                    if message.fatal:
                        raise TunnelError(f"control plane closed the session: {message.message}")
