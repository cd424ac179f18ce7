"""One node's control connection, as the control plane serves it.

The node dials out (NAT-friendly) and authenticates with a join token before
the WebSocket upgrade; then the first control message must be its hello. From
there, heartbeats and replica reports flow in, complete desired states flow
out, and the same socket carries tunnelled requests to the node's workers.

Error handling: a malformed, oversized or unexpected control message gets an
`error` message and closes that connection only; the plane keeps serving.
"""

from __future__ import annotations

import logging

import msgspec
import trio

from runtime.control import messages
from runtime.control.messages import Assign, Error, Heartbeat, Hello, ProtocolError, Status, Welcome
from runtime.scheduler.service import Scheduler
from runtime.scheduler.store import JoinToken
from runtime.tunnel import MessageTransport, TunnelError, open_mux

log = logging.getLogger("flowctl.scheduler")
HELLO_TIMEOUT = 10.0


async def authenticate(scheduler: Scheduler, authorization: str | None) -> JoinToken:
    """Check a node's `Authorization: Bearer <join token>`; raise TokenError if refused."""
    token = (authorization or "").removeprefix("Bearer ").strip()
    return await trio.to_thread.run_sync(scheduler.store.check_token, token)


async def serve_node(scheduler: Scheduler, transport: MessageTransport, *, peer: str = "?") -> None:
    """Serve one authenticated node connection until it closes.

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
            await _serve_hello(scheduler, mux, hello, peer)
    except TunnelError as exc:
        log.info("node connection %s closed: %s", peer, exc)


async def _serve_hello(scheduler: Scheduler, mux, hello: Hello, peer: str) -> None:
    registry = scheduler.registry
    epoch = registry.connect(hello)
    await trio.to_thread.run_sync(scheduler.store.save_node, hello.node_id, hello.name,
                                  msgspec.to_builtins(hello))
    await mux.send_control(messages.encode(Welcome(
        node_id=hello.node_id, cluster_id=await trio.to_thread.run_sync(scheduler.store.cluster_id),
        heartbeat_interval_s=scheduler.heartbeat_interval, hub_url=scheduler.hub_url)))

    async def send_assign(assign: Assign) -> None:
        await mux.send_control(messages.encode(assign))

    scheduler.attach(hello.node_id, epoch, send_assign, mux)
    log.info("node %s (%s) joined from %s", hello.name, hello.node_id, peer)
    try:
        for report in hello.replicas:
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
            if isinstance(message, Heartbeat):
                registry.heartbeat(hello.node_id, epoch, message)
            elif isinstance(message, Status):
                scheduler.report(hello.node_id, message.replica)
    finally:
        scheduler.detach(hello.node_id, epoch)
        registry.disconnect(hello.node_id, epoch)
