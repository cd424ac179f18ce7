"""One node's control connection, as the control plane serves it.

The node dials out (NAT-friendly) and authenticates before the WebSocket upgrade,
with a join token or with its node credential; then the first control message must
be its hello. From there, heartbeats and replica reports flow in, complete desired
states flow out, and the same socket carries tunnelled requests to the node's workers.

Node identity: a join token may enroll node ids that are not enrolled yet; the welcome
of that first join carries the node's credential, which binds that id to the token.
A join token can never claim an enrolled id; a credential can claim only its own id,
and a newer connection with it replaces (and closes) the node's older one, so a node
whose old connection went half-open is back at once.

Node-owned deployments (`flowctl run DIR`): a node may announce services it runs from its
own files (`local`, its complete set); the plane answers each announcement with a
`local_verdict` (runtime.scheduler.local_deployments checks them) and drops them when this
connection ends.

Error handling: a malformed, oversized or unexpected control message, or a hello
claiming an id the connection may not use, gets a fatal `error` and closes that
connection only; the plane keeps serving. A `job_reports` batch is checked entry by entry
(runtime.control.job_batches): a bad entry, or a bad batch, gets a non-fatal `error` naming
it, and the connection and the batch's good entries go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec
import trio

from runtime.control import messages
from runtime.control.job_batches import unpack_reports
from runtime.control.messages import (
    IDENTITY,
    Assign,
    Error,
    Heartbeat,
    Hello,
    JobLog,
    JobReport,
    JobReports,
    Local,
    ProtocolError,
    Status,
    Welcome,
)
from runtime.scheduler.service import NodeLink, Scheduler
from runtime.scheduler.store import (
    CREDENTIAL_PREFIX,
    EnrollError,
    JoinToken,
    NodeCredential,
    TokenError,
)
from runtime.tunnel import MessageTransport, Mux, TunnelError, open_mux

log = logging.getLogger("flowctl.scheduler")
HELLO_TIMEOUT = 10.0

NodeAuth = JoinToken | NodeCredential
JobSink = Callable[[str, JobReport | JobLog | Heartbeat], None]  # (node id, message), must not block
_job_sinks: dict[int, JobSink] = {}


def route_job_messages(scheduler: Scheduler, sink: JobSink | None) -> None:
    """Hand every node's job_report / job_log, and its heartbeats, to `sink` (the jobs role)."""
    if sink is None:
        _job_sinks.pop(id(scheduler), None)
    else:
        _job_sinks[id(scheduler)] = sink


class IdentityRefused(Exception):
    """A hello claims a node id this connection may not use; the message says why."""


async def authenticate(scheduler: Scheduler, authorization: str | None) -> NodeAuth:
    """Check a node's `Authorization: Bearer <join token or node credential>`.

    Error handling: TokenError (CredentialError for a credential) says why it is refused.
    """
    secret = (authorization or "").removeprefix("Bearer ").strip()
    if secret.startswith(CREDENTIAL_PREFIX):
        return await trio.to_thread.run_sync(scheduler.store.check_credential, secret)
    return await trio.to_thread.run_sync(scheduler.store.check_token, secret)


async def serve_node(scheduler: Scheduler, transport: MessageTransport, *, auth: NodeAuth,
                     peer: str = "?") -> None:
    """Serve one node connection, authenticated as `auth`, until it closes.

    Cancellation: cancelling closes the mux; the node is marked lost at once.
    """
    try:
        async with open_mux(transport, opener=False) as mux:
            try:
                with trio.fail_after(HELLO_TIMEOUT):
                    hello = messages.decode_node_message(await mux.receive_control())
                if not isinstance(hello, Hello):
                    raise ProtocolError(f"expected hello first, got {type(hello).__name__.lower()}")
            except (ProtocolError, trio.TooSlowError) as exc:
                reason = str(exc) or f"no hello within {HELLO_TIMEOUT:.0f} s"
                log.warning("node %s refused: %s", peer, reason)
                await mux.send_control(messages.encode(Error(reason, fatal=True)))
                return
            try:
                credential = await _admit(scheduler, auth, hello)
            except IdentityRefused as exc:
                log.warning("node connection from %s refused: %s", peer, exc)
                await mux.send_control(messages.encode(Error(str(exc), fatal=True, code=IDENTITY)))
                return
            await _serve_hello(scheduler, mux, hello, auth, credential, peer)
    except TunnelError as exc:
        log.info("node connection %s closed: %s", peer, exc)


async def _admit(scheduler: Scheduler, auth: NodeAuth, hello: Hello) -> str:
    """Check that `auth` may connect as `hello.node_id`; a new credential if this enrolls it, else ""."""
    if isinstance(auth, NodeCredential):
        if hello.node_id != auth.node_id:
            raise IdentityRefused(f"this credential belongs to node {auth.node_id!r}, "
                                  f"not {hello.node_id!r}")
        return ""
    try:
        return await trio.to_thread.run_sync(scheduler.store.enroll_node, hello.node_id, auth.token_id)
    except (EnrollError, TokenError) as exc:
        raise IdentityRefused(str(exc)) from None


class _Closer:
    """Lets the scheduler end this connection from outside: a fatal error, then close."""

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.why: tuple[str, str] | None = None

    def close(self, reason: str, code: str) -> None:
        if self.why is None:
            self.why = (reason, code)
        self.scope.cancel()


async def _serve_hello(scheduler: Scheduler, mux: Mux, hello: Hello, auth: NodeAuth, credential: str,
                       peer: str) -> None:
    registry = scheduler.registry
    epoch = registry.connect(hello)
    closer = _Closer()
    try:
        await trio.to_thread.run_sync(scheduler.store.save_node, hello.node_id, hello.name,
                                      msgspec.to_builtins(hello))
        await mux.send_control(messages.encode(Welcome(
            node_id=hello.node_id, cluster_id=await trio.to_thread.run_sync(scheduler.store.cluster_id),
            heartbeat_interval_s=scheduler.heartbeat_interval, hub_url=scheduler.hub_url,
            credential=credential, features=messages.FEATURES)))

        async def send_assign(assign: Assign) -> None:
            await mux.send_control(messages.encode(assign))

        scheduler.attach(hello.node_id, NodeLink(epoch, send_assign, mux, auth.token_id, closer.close))
        token_name = auth.token_name if isinstance(auth, NodeCredential) else auth.name
        log.info("node %s (%s) %s from %s (join token %r)", hello.name, hello.node_id,
                 "enrolled" if credential else "joined", peer, token_name)
        announced: Local | None = None  # this connection's last announcement that was accepted in part

        async def announce(local: Local) -> None:
            nonlocal announced
            verdict = scheduler.local.announce(hello.node_id, hello.name, epoch, local)
            announced = local if verdict.accepted else None
            for service_id, why in verdict.refused.items():
                log.warning("node %s: refused its own deployment %s: %s", hello.name, service_id, why)
            await mux.send_control(messages.encode(verdict))

        with closer.scope:
            for report in hello.replicas if closer.why is None else ():
                scheduler.report(hello.node_id, report)
            while True:
                try:
                    message = messages.decode_node_message(await mux.receive_control())
                    if isinstance(message, Hello):
                        raise ProtocolError("second hello on one connection")
                except ProtocolError as exc:
                    log.warning("node %s sent a bad control message, closing: %s", hello.name, exc)
                    await mux.send_control(messages.encode(Error(str(exc), fatal=True)))
                    return
                if isinstance(message, JobReports):
                    await _job_reports(scheduler, mux, hello, message)
                elif isinstance(message, JobReport | JobLog | Heartbeat) and (
                        sink := _job_sinks.get(id(scheduler))) is not None:
                    sink(hello.node_id, message)
                if isinstance(message, Heartbeat):
                    current = registry.heartbeat(hello.node_id, epoch, message)
                    if current and message.logs:
                        scheduler.note_logs(hello.node_id, message.logs)
                    if current and announced is not None and not scheduler.local.of(hello.node_id):
                        # Lost while silent (e.g. SIGSTOP), back on this connection: serve them again.
                        await announce(announced)
                elif isinstance(message, Status):
                    scheduler.report(hello.node_id, message.replica)
                elif isinstance(message, Local):
                    await announce(message)
        if closer.why is not None:
            reason, code = closer.why
            log.info("closing the connection of node %s (%s) from %s: %s", hello.name, hello.node_id, peer, reason)
            await mux.send_control(messages.encode(Error(reason, fatal=True, code=code)))
    finally:
        scheduler.local.drop(hello.node_id, epoch)
        scheduler.detach(hello.node_id, epoch)
        registry.disconnect(hello.node_id, epoch)


async def _job_reports(scheduler: Scheduler, mux: Mux, hello: Hello, batch: JobReports) -> None:
    """Hand a batch's reports to the jobs role one by one; refuse its bad entries (non-fatal)."""
    reports, refused = unpack_reports(batch)
    sink = _job_sinks.get(id(scheduler))
    for report in reports:
        if sink is not None:
            sink(hello.node_id, report)
    if refused:  # one answer per batch, however many entries it refuses
        more = f" (and {len(refused) - 1} more entries refused)" if len(refused) > 1 else ""
        log.warning("node %s sent a bad job_reports batch: %s%s", hello.name, refused[0].reason, more)
        await mux.send_control(messages.encode(Error(refused[0].reason + more)))
