"""Running an ASGI app (quart-trio) on hypercorn's Trio worker, with flowctl's limits.

`serve_app` runs until cancelled, then drains: it stops accepting, closes idle keep-alive
connections at once, lets HTTP requests in flight finish, then closes open WebSockets
with 1001 (going away), all within `graceful_timeout` seconds, and returns as soon as no
request or WebSocket is left (not when hypercorn's last connection task ends: a closed
WebSocket's ping task lingers for a whole ping interval). `open_test_server` is the same on 127.0.0.1:0 for tests.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.logging import AccessLogAtoms
from hypercorn.logging import Logger as HypercornLogger
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import repr_socket_addr, wrap_app

from runtime.errors import FlowError
from runtime.http.guard import DEFAULT_UNREAD_BODY_LIMIT, DEFAULT_UNREAD_BODY_TIMEOUT, Guard
from runtime.http.zerocopy import FileRouter, ZeroCopy

__all__ = [
    "DEFAULT_GRACEFUL_TIMEOUT",
    "DEFAULT_KEEP_ALIVE_TIMEOUT",
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_STALL_TIMEOUT",
    "ListenError",
    "open_test_server",
    "redact_url",
    "serve_app",
]

DEFAULT_MAX_HEADER_BYTES = 16 * 1024
# hypercorn counts a connection as idle until a request's headers are complete, so this
# one deadline closes both idle keep-alive connections and slow-header (slowloris) clients.
DEFAULT_KEEP_ALIVE_TIMEOUT = 5.0
DEFAULT_GRACEFUL_TIMEOUT = 5.0
# A client whose receive window stays shut this long is gone or hostile; a slow one still
# takes bytes now and then.
DEFAULT_STALL_TIMEOUT = 60.0
DEFAULT_BACKLOG = 128
# Extra time, past the drain, for hypercorn's lifespan shutdown before we cancel it.
_SHUTDOWN_SLACK = 2.0

_TOKEN_VALUE = re.compile(r"(?i)((?:^|[?&;])(?:token|access_token|api_key)=)[^&;#\s]*")
# Like hypercorn's default but with the query string (redacted) and the time taken.
ACCESS_LOG_FORMAT = '%(h)s "%(R)s" %(s)s %(b)s %(L)ss'
_SECRET_HEADERS = ("{authorization}i", "{cookie}i", "{proxy-authorization}i")


class ListenError(FlowError):
    """The server could not listen on the address asked for."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"cannot listen on {host!r} port {port}: {reason}")
        self.host = host
        self.port = port
        self.reason = reason


def redact_url(url: str) -> str:
    """Replace the value of every ``token=`` (``access_token=``, ``api_key=``) parameter by ``***``."""
    return _TOKEN_VALUE.sub(r"\1***", url)


async def serve_app(
    app: Any,
    *,
    host: str,
    port: int,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    keep_alive_timeout: float = DEFAULT_KEEP_ALIVE_TIMEOUT,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    read_timeout: float | None = None,
    graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT,
    unread_body_timeout: float = DEFAULT_UNREAD_BODY_TIMEOUT,
    unread_body_limit: int = DEFAULT_UNREAD_BODY_LIMIT,
    backlog: int = DEFAULT_BACKLOG,
    websocket_ping_interval: float | None = None,
    access_log: logging.Logger | None = None,
    error_log: logging.Logger | None = None,
    file_router: FileRouter | None = None,
) -> None:
    """Serve the ASGI `app` on `host`:`port` until cancelled.

    Calls ``task_status.started(urls)`` once listening, with the real port when `port` is
    0 (``["http://127.0.0.1:54321"]``). Request line and headers over `max_header_bytes`
    get 431, and two ``Authorization`` headers 400 (runtime/http/guard.py). A connection idle (or still sending its headers) for `keep_alive_timeout` is
    closed; one whose client accepts no response bytes for `stall_timeout` is aborted by
    the kernel (TCP_USER_TIMEOUT), since hypercorn's sends cannot be cancelled.
    `read_timeout` bounds each socket read; hypercorn applies it even while a response
    streams out, so leave it None for servers of large downloads and put deadlines on
    request bodies in the handlers. A reply that starts before its request's body has
    arrived (an early 401, 413, ...) first waits up to `unread_body_timeout` seconds for the
    rest of a body of up to `unread_body_limit` bytes, so the connection can be reused, and
    otherwise carries ``Connection: close``. WebSockets are pinged every `websocket_ping_interval`
    seconds (default: half of `stall_timeout`), so a dead peer leaves unacknowledged bytes
    and the kernel drops it within two ping intervals. Access logs are off unless `access_log` is given;
    when on, token query values and credential headers are redacted. With `file_router`,
    the GETs it answers with a file are sent with ``os.sendfile`` before hypercorn sees the
    connection (runtime/http/zerocopy.py); they are not in the access log.

    Cancellation: stops accepting and closes idle keep-alive connections; lets HTTP
    requests in flight finish, then closes WebSockets with 1001 (going away); whatever is
    left after `graceful_timeout` seconds is cancelled. Returns once no request or
    WebSocket is left (a connection stuck in a send to a stalled client lasts until
    `stall_timeout`).

    Error handling: failing to resolve or bind the address raises `ListenError`.
    """
    config = _hypercorn_config(
        max_header_bytes=max_header_bytes, keep_alive_timeout=keep_alive_timeout,
        read_timeout=read_timeout, graceful_timeout=graceful_timeout,
        access_log=access_log, error_log=error_log,
    )
    config.websocket_ping_interval = (websocket_ping_interval if websocket_ping_interval is not None
                                      else stall_timeout / 2)
    guard = Guard(app, max_header_bytes=max_header_bytes, finish_timeout=graceful_timeout,
                  unread_body_timeout=unread_body_timeout, unread_body_limit=unread_body_limit)
    guarded = wrap_app(guard, config.wsgi_max_body_size, "asgi")
    zerocopy = (ZeroCopy(file_router, max_header_bytes=max_header_bytes, keep_alive_timeout=keep_alive_timeout)
                if file_router is not None else None)
    sock = await _listen(host, port, stall_timeout=stall_timeout, backlog=backlog)
    stop = trio.Event()
    # hypercorn drains on its shutdown trigger, but an outside cancel would cut that short,
    # so once listening it runs in a shielded scope whose deadline bounds the drain. Not
    # before: a cancel during start-up just stops it.
    shield = trio.CancelScope()
    with sock:
        async with trio.open_nursery() as nursery:
            guard.drainers = nursery
            urls = await nursery.start(partial(_serve_in, shield, guarded, guard, config, sock, stop, zerocopy))
            shield.shield = True
            try:
                task_status.started(urls)
                await trio.sleep_forever()
            finally:
                stop.set()
                shield.deadline = trio.current_time() + graceful_timeout + _SHUTDOWN_SLACK


async def _listen(host: str, port: int, *, stall_timeout: float, backlog: int) -> socket.socket:
    """A listening socket; bound here rather than by hypercorn to set TCP_USER_TIMEOUT."""
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                              flags=socket.AI_PASSIVE)
        family, type_, proto, _, address = infos[0]
        sock = socket.socket(family, type_, proto)
    except OSError as error:
        raise ListenError(host, port, error.strerror or str(error)) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            # Inherited by accepted sockets; covers a zero receive window too (tcp(7)).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                            max(1, int(stall_timeout * 1000)))
        sock.bind(address)
        sock.listen(backlog)
    except OSError as error:
        sock.close()
        raise ListenError(host, port, error.strerror or str(error)) from None
    sock.setblocking(False)
    return sock


@asynccontextmanager
async def open_test_server(app: Any, **limits: Any) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 on a free port for a test; yields ``"http://127.0.0.1:PORT"``.

    Leaving the block cancels the server and waits until it has stopped.
    """
    limits.setdefault("graceful_timeout", 1.0)
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve_app, app, host="127.0.0.1", port=0, **limits))
        try:
            yield urls[0]
        finally:
            nursery.cancel_scope.cancel()


async def _serve_in(
    scope: trio.CancelScope,
    app: Any,
    guard: Guard,
    config: HypercornConfig,
    sock: socket.socket,
    stop: trio.Event,
    zerocopy: ZeroCopy | None = None,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    # hypercorn.trio.run.worker_serve, less what flowctl does not use (TLS, QUIC, statsd,
    # max_requests), with a drain that ends when the guard has no request or WebSocket
    # left rather than when the last connection task ends: hypercorn's WebSocket ping task
    # only notices a closed socket after its next ping interval (30 s by default).
    with scope:
        lifespan_state: dict[str, Any] = {}
        lifespan = Lifespan(app, config, lifespan_state)
        context = WorkerContext(None)
        async with trio.open_nursery() as lifespan_nursery:
            await lifespan_nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            async with trio.open_nursery() as server_nursery:
                listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
                connection: Any = partial(TCPServer, app, config, context, ConnectionState(lifespan_state.copy()))
                if zerocopy is not None:
                    connection = partial(_zero_copy_first, zerocopy, connection)
                async with trio.open_nursery() as accepting:
                    accepting.start_soon(partial(trio.serve_listeners, connection, [listener],
                                                 handler_nursery=server_nursery))
                    task_status.started([f"http://{repr_socket_addr(sock.family, sock.getsockname())}"])
                    await stop.wait()
                    accepting.cancel_scope.cancel()
                # Idle keep-alive connections close now, busy ones after their response.
                await context.terminated.set()
                if zerocopy is not None:
                    zerocopy.close_idle()
                with trio.move_on_after(config.graceful_timeout):
                    await guard.drain()
                    if zerocopy is not None:
                        await zerocopy.drain()
                server_nursery.cancel_scope.cancel()
            await lifespan.wait_for_shutdown()
            lifespan_nursery.cancel_scope.cancel()


async def _zero_copy_first(zerocopy: ZeroCopy, tcp_server: Any, stream: Any) -> None:
    async def hand_off(replay: Any) -> None:
        await tcp_server(replay).run()

    await zerocopy.handle(stream, hand_off)


def _hypercorn_config(
    *,
    max_header_bytes: int,
    keep_alive_timeout: float,
    read_timeout: float | None,
    graceful_timeout: float,
    access_log: logging.Logger | None,
    error_log: logging.Logger | None,
) -> HypercornConfig:
    config = HypercornConfig()
    config.h11_max_incomplete_size = max_header_bytes
    config.h2_max_header_list_size = max_header_bytes
    config.keep_alive_timeout = keep_alive_timeout
    config.read_timeout = read_timeout  # type: ignore[assignment]  # typed int, used as float
    config.graceful_timeout = graceful_timeout
    config.accesslog = access_log
    config.access_log_format = ACCESS_LOG_FORMAT
    # A plain logger with no handler: warnings reach stderr through logging's last resort,
    # hypercorn's "Running on ..." info line does not.
    config.errorlog = error_log or logging.getLogger("runtime.http.server")
    config.logger_class = _RedactingLogger
    config.include_server_header = False
    return config


class _RedactingLogger(HypercornLogger):
    """hypercorn's logger with secrets taken out of access-log lines."""

    def atoms(self, request: Any, response: Any, request_time: float) -> Any:
        # hypercorn declares a Mapping but builds an AccessLogAtoms: a dict with a lenient
        # __getitem__; edit it in place to keep that.
        atoms = cast(AccessLogAtoms, super().atoms(request, response, request_time))
        for key, value in list(atoms.items()):
            if key in _SECRET_HEADERS:
                atoms[key] = "***"
            elif key.endswith("}e"):
                atoms[key] = "-"  # environment variables may hold FLOWCTL_TOKEN
            elif isinstance(value, str) and "token=" in value.lower():
                atoms[key] = redact_url(value)
        return atoms
