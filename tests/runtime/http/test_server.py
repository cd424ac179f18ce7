"""serve_app: binding, limits, graceful shutdown; redact_url."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing
from quart import websocket
from quart_trio import QuartTrio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from runtime.http import ListenError, open_test_server, redact_url, serve_app, serve_file

TIMEOUT = 30


def make_app(entered: trio.Event | None = None, release: trio.Event | None = None) -> QuartTrio:
    app = QuartTrio(__name__)

    @app.route("/hello")
    async def hello():  # type: ignore[no-untyped-def]
        return "hello"

    @app.websocket("/echo")
    async def echo() -> None:
        while True:
            await websocket.send(await websocket.receive())

    @app.route("/slow")
    async def slow():  # type: ignore[no-untyped-def]
        assert entered is not None and release is not None
        entered.set()
        await release.wait()
        return "done"

    return app


async def test_reports_real_port_and_stops_on_cancel() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(partial(serve_app, make_app(), host="127.0.0.1", port=0))
            assert len(urls) == 1
            url = urls[0]
            assert url.startswith("http://127.0.0.1:")
            assert int(url.rsplit(":", 1)[1]) > 0
            async with httpx.AsyncClient() as client:
                r = await client.get(f"{url}/hello")
            assert (r.status_code, r.text) == (200, "hello")
            nursery.cancel_scope.cancel()
        # Stopped: nothing listens there any more.
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", int(url.rsplit(":", 1)[1]))


async def test_cancel_during_startup_stops_at_once() -> None:
    app = make_app()

    @app.before_serving
    async def hang() -> None:
        await trio.sleep_forever()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(serve_app, app, host="127.0.0.1", port=0))
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()


async def test_busy_port_is_a_listen_error() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_test_server(make_app()) as url:
            port = int(url.rsplit(":", 1)[1])
            expected = pytest.RaisesExc(ListenError, match=f"port {port}: Address already in use")
            with pytest.RaisesGroup(expected, flatten_subgroups=True):
                async with trio.open_nursery() as nursery:
                    await nursery.start(partial(serve_app, make_app(), host="127.0.0.1",
                                                port=port))


async def test_oversized_headers_are_rejected() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_test_server(make_app()) as url:
            async with httpx.AsyncClient() as client:
                ok = await client.get(f"{url}/hello", headers={"X-Pad": "a" * 8 * 1024})
                assert ok.status_code == 200
                try:
                    r = await client.get(f"{url}/hello", headers={"X-Pad": "a" * 17 * 1024})
                except httpx.TransportError:
                    pass  # the server closing the connection is a rejection too
                else:
                    assert r.status_code == 431


async def test_websockets_pass_the_guard() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_test_server(make_app()) as url:
            ws_url = url.replace("http://", "ws://") + "/echo"
            async with open_websocket_url(ws_url) as ws:
                await ws.send_message("ping")
                assert await ws.get_message() == "ping"
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(ws_url, extra_headers=[("X-Pad", "a" * 17 * 1024)]):
                    pass
            assert rejected.value.status_code == 403


async def _read_until_eof(stream: trio.SocketStream) -> bytes:
    received = b""
    while chunk := await stream.receive_some(65536):
        received += chunk
    return received


async def test_slow_headers_are_cut_off() -> None:
    # A client that never finishes its request line must not hold a connection forever.
    with trio.fail_after(TIMEOUT):
        async with open_test_server(make_app(), keep_alive_timeout=0.3) as url:
            stream = await trio.open_tcp_stream("127.0.0.1", int(url.rsplit(":", 1)[1]))
            async with stream:
                await stream.send_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
                with trio.fail_after(5):
                    assert await _read_until_eof(stream) == b""


async def test_idle_keep_alive_connection_is_closed() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_test_server(make_app(), keep_alive_timeout=0.3) as url:
            stream = await trio.open_tcp_stream("127.0.0.1", int(url.rsplit(":", 1)[1]))
            async with stream:
                await stream.send_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
                with trio.fail_after(5):
                    answer = await _read_until_eof(stream)
                assert answer.startswith(b"HTTP/1.1 200")
                assert answer.endswith(b"hello")


async def test_cancel_lets_requests_in_flight_finish() -> None:
    entered, release = trio.Event(), trio.Event()
    results: list[httpx.Response] = []

    async def request(url: str) -> None:
        async with httpx.AsyncClient() as client:
            results.append(await client.get(f"{url}/slow"))

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as outer:
            server_scope = trio.CancelScope()

            async def run_server(task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
                with server_scope:
                    await serve_app(make_app(entered, release), host="127.0.0.1", port=0,
                                    graceful_timeout=10, task_status=task_status)

            server_done = trio.Event()

            async def server_then_flag(task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
                await run_server(task_status=task_status)
                server_done.set()

            urls = await outer.start(server_then_flag)
            outer.start_soon(request, urls[0])
            await entered.wait()
            server_scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert not server_done.is_set()  # draining, not gone
            release.set()
            await server_done.wait()
    assert [(r.status_code, r.text) for r in results] == [(200, "done")]


async def test_drain_is_bounded() -> None:
    entered, never = trio.Event(), trio.Event()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as outer:
            server_scope = trio.CancelScope()
            server_done = trio.Event()

            async def run_server(task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
                with server_scope:
                    await serve_app(make_app(entered, never), host="127.0.0.1", port=0,
                                    graceful_timeout=0.2, task_status=task_status)
                server_done.set()

            async def stuck_request(url: str) -> None:
                async with httpx.AsyncClient() as client:
                    with pytest.raises(httpx.TransportError):
                        await client.get(f"{url}/slow")

            urls = await outer.start(run_server)
            outer.start_soon(stuck_request, urls[0])
            await entered.wait()
            server_scope.cancel()
            with trio.fail_after(5):
                await server_done.wait()


class Server:
    """serve_app in a cancel scope of its own, with an event set once it has returned."""

    def __init__(self, app: QuartTrio, **limits: object) -> None:
        self.app, self.limits = app, limits
        self.scope = trio.CancelScope()
        self.done = trio.Event()

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
        with self.scope:
            await serve_app(self.app, host="127.0.0.1", port=0, task_status=task_status, **self.limits)
        self.done.set()


async def test_idle_connections_and_websockets_do_not_hold_the_drain() -> None:
    # A long grace period and keep-alive timeout: stopping must not wait for either.
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as outer:
            server = Server(make_app(), graceful_timeout=TIMEOUT, keep_alive_timeout=TIMEOUT)
            url = (await outer.start(server.run))[0]
            port = int(url.rsplit(":", 1)[1])
            keep_alive = await trio.open_tcp_stream("127.0.0.1", port)
            await keep_alive.send_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b"hello"):
                answer += await keep_alive.receive_some(65536)
            async with keep_alive, open_websocket_url(url.replace("http://", "ws://") + "/echo") as ws:
                await ws.send_message("ping")
                assert await ws.get_message() == "ping"
                server.scope.cancel()
                with trio.fail_after(5):  # far less than the grace period
                    await server.done.wait()
                    assert await _read_until_eof(keep_alive) == b""
                    with pytest.raises(ConnectionClosed) as closed:
                        await ws.get_message()
            assert closed.value.reason.code == 1001


async def test_a_closed_websocket_does_not_hold_the_drain() -> None:
    # hypercorn's ping task outlives a closed WebSocket by up to a ping interval.
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as outer:
            server = Server(make_app(), graceful_timeout=TIMEOUT, websocket_ping_interval=TIMEOUT)
            url = (await outer.start(server.run))[0]
            async with open_websocket_url(url.replace("http://", "ws://") + "/echo") as ws:
                await ws.send_message("ping")
                assert await ws.get_message() == "ping"
            server.scope.cancel()
            with trio.fail_after(5):
                await server.done.wait()


async def test_websockets_stay_open_while_requests_finish() -> None:
    # A WebSocket (the node tunnel) may carry what the requests in flight wait for.
    entered, release = trio.Event(), trio.Event()
    results: list[httpx.Response] = []

    async def request(url: str) -> None:
        async with httpx.AsyncClient() as client:
            results.append(await client.get(f"{url}/slow"))

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as outer:
            server = Server(make_app(entered, release), graceful_timeout=TIMEOUT)
            url = (await outer.start(server.run))[0]
            async with open_websocket_url(url.replace("http://", "ws://") + "/echo") as ws:
                outer.start_soon(request, url)
                await entered.wait()
                server.scope.cancel()
                await trio.testing.wait_all_tasks_blocked()
                await ws.send_message("still here")
                assert await ws.get_message() == "still here"
                release.set()
                with trio.fail_after(5):
                    await server.done.wait()
                    with pytest.raises(ConnectionClosed) as closed:
                        await ws.get_message()
            assert closed.value.reason.code == 1001
    assert [(r.status_code, r.text) for r in results] == [(200, "done")]


async def test_stalled_client_does_not_pin_shutdown(tmp_path: Path) -> None:
    # hypercorn's socket sends are shielded, so only the kernel (TCP_USER_TIMEOUT) can end
    # a send to a client that stopped reading; without it this server never stops.
    path = tmp_path / "large"
    with path.open("wb") as f:
        f.truncate(512 * 1024 * 1024)  # sparse; far more than the socket buffers hold
    app = make_app()

    @app.route("/large")
    async def large():  # type: ignore[no-untyped-def]
        return await serve_file(path, etag="large")

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as outer:
            server_scope = trio.CancelScope()
            server_done = trio.Event()

            async def run_server(task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
                with server_scope:
                    await serve_app(app, host="127.0.0.1", port=0, graceful_timeout=0.2,
                                    stall_timeout=1.0, task_status=task_status)
                server_done.set()

            urls = await outer.start(run_server)
            stream = await trio.open_tcp_stream("127.0.0.1", int(urls[0].rsplit(":", 1)[1]))
            async with stream:
                await stream.send_all(b"GET /large HTTP/1.1\r\nHost: x\r\n\r\n")
                received = 0
                while received < 1024 * 1024:
                    received += len(await stream.receive_some(65536))
                # Stop reading, keep the connection open, and stop the server.
                server_scope.cancel()
                with trio.fail_after(10):
                    await server_done.wait()


def test_redact_url() -> None:
    assert redact_url("/blobs/x?token=s3cret&a=1") == "/blobs/x?token=***&a=1"
    assert redact_url("http://h/p?a=1&token=s3cret") == "http://h/p?a=1&token=***"
    assert redact_url("token=abc") == "token=***"
    assert redact_url("/p?access_token=abc#frag") == "/p?access_token=***#frag"
    assert redact_url("/p?TOKEN=abc") == "/p?TOKEN=***"
    assert redact_url("/p?x=1;api_key=sk-1") == "/p?x=1;api_key=***"
    assert redact_url("/p?mytoken=abc&notoken") == "/p?mytoken=abc&notoken"


async def test_access_log_redacts_tokens(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.access")
    logger.setLevel(logging.INFO)
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.INFO, logger="tests.access"):
        async with open_test_server(make_app(), access_log=logger) as url:
            async with httpx.AsyncClient() as client:
                await client.get(f"{url}/hello?token=s3cret",
                                 headers={"Authorization": "Bearer s3cret"})
    lines = [r.getMessage() for r in caplog.records if r.name == "tests.access"]
    # hypercorn may log a request twice (once without a status) when the client hangs
    # up right after the last byte; every line must be redacted either way.
    assert any('"GET /hello?token=*** 1.1" 200' in line for line in lines), lines
    assert not any("s3cret" in line for line in lines)
