"""The guard serve_app puts in front of every app: duplicate credentials, early replies and their bodies."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from quart import Response
from quart_trio import QuartTrio

from runtime.http import open_test_server
from tests.runtime.http.rawhttp import open_raw_connection

TIMEOUT = 10
WS_HEAD = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13"),
           ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]


class Apps:
    """The same two routes as a bare ASGI app and as a quart app.

    POST /refuse answers 401 without reading its body (as an auth check does), setting
    `deciding` first; GET /hello answers 200.
    """

    def __init__(self) -> None:
        self.deciding = trio.Event()

    async def bare(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000})
            return
        status, body = (200, b"hello") if scope["path"] == "/hello" else (401, b"no")
        if status == 401:
            self.deciding.set()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def quart(self) -> QuartTrio:
        app = QuartTrio(__name__)

        @app.route("/hello")
        async def hello() -> str:
            return "hello"

        @app.post("/refuse")
        async def refuse() -> Response:
            self.deciding.set()
            return Response("no", status=401)

        return app


@pytest.fixture(params=["bare", "quart"])
def apps(request: pytest.FixtureRequest) -> tuple[Apps, Any]:
    apps = Apps()
    return apps, apps.bare if request.param == "bare" else apps.quart()


async def test_two_authorization_headers_are_refused_on_http_and_websocket(apps: tuple[Apps, Any]) -> None:
    _, app = apps
    twice = [("Authorization", "Bearer a"), ("Authorization", "Bearer b")]
    with trio.fail_after(TIMEOUT):
        async with open_test_server(app) as url:
            async with open_raw_connection(url) as conn:
                r = await conn.request("GET", "/hello", twice)
                assert r.status == 400 and r.header("connection") == "close"
                body = json.loads(r.body)
                assert body["detail"] == body["error"]["message"] == \
                    "the request has more than one Authorization header: send one"
            async with open_raw_connection(url) as ws:
                await ws.send_head("GET", "/ws", [*WS_HEAD, *twice])
                assert (await ws.response()).status == 400
            async with open_raw_connection(url) as conn:  # one is fine
                assert (await conn.request("GET", "/hello", twice[:1])).status == 200


async def test_an_early_reply_lets_a_small_body_arrive_and_the_connection_stay(apps: tuple[Apps, Any]) -> None:
    events, app = apps
    with trio.fail_after(TIMEOUT):
        async with open_test_server(app) as url:
            async with open_raw_connection(url) as conn:
                await conn.send_head("POST", "/refuse", [("Content-Length", "10")])
                await events.deciding.wait()  # the app answers before any of the body arrived
                await conn.send(b"0123456789")
                r = await conn.response()
                assert r.status == 401 and r.header("connection") is None
                assert (await conn.request("GET", "/hello")).body == b"hello"  # the same connection


async def test_an_early_reply_to_a_body_that_never_comes_closes_the_connection(apps: tuple[Apps, Any]) -> None:
    events, app = apps
    with trio.fail_after(TIMEOUT):
        async with open_test_server(app, unread_body_timeout=0.2) as url:
            async with open_raw_connection(url) as conn:
                await conn.send_head("POST", "/refuse", [("Content-Length", "10")])
                await conn.send(b"012")
                r = await conn.response()
                assert r.status == 401 and r.header("connection") == "close"
                assert await conn.closed_by_server()


async def test_a_large_unread_body_is_not_waited_for(apps: tuple[Apps, Any]) -> None:
    events, app = apps
    with trio.fail_after(TIMEOUT):
        async with open_test_server(app, unread_body_timeout=60) as url:
            async with open_raw_connection(url) as conn:
                await conn.send_head("POST", "/refuse", [("Content-Length", str(10 << 20))])
                r = await conn.response()
                assert r.status == 401 and r.header("connection") == "close"
                assert await conn.closed_by_server()


async def test_a_chunked_body_is_let_in_up_to_the_limit(apps: tuple[Apps, Any]) -> None:
    events, app = apps
    with trio.fail_after(TIMEOUT):
        async with open_test_server(app, unread_body_timeout=60, unread_body_limit=100) as url:
            async with open_raw_connection(url) as small:
                await small.send_head("POST", "/refuse", [("Transfer-Encoding", "chunked")])
                await small.send(b"5\r\nhello\r\n0\r\n\r\n")
                assert (await small.response()).header("connection") is None
                assert (await small.request("GET", "/hello")).status == 200
            async with open_raw_connection(url) as large:
                await large.send_head("POST", "/refuse", [("Transfer-Encoding", "chunked")])
                await large.send(b"c8\r\n" + b"x" * 200 + b"\r\n")  # past the limit, and no end
                assert (await large.response()).header("connection") == "close"
                assert await large.closed_by_server()


async def test_replies_to_whole_requests_keep_the_connection(apps: tuple[Apps, Any]) -> None:
    _, app = apps
    with trio.fail_after(TIMEOUT):
        async with open_test_server(app) as url:
            async with open_raw_connection(url) as conn:
                for _ in range(3):
                    r = await conn.request("GET", "/hello")
                    assert r.status == 200 and r.header("connection") is None
                r = await conn.request("POST", "/refuse", body=b"x" * 1000)
                assert r.status == 401 and r.header("connection") is None
                assert (await conn.request("GET", "/hello")).status == 200


async def test_an_early_reply_to_a_large_upload_still_closes_the_connection():
    """hypercorn queues at most ten body parts for the app and, once the app has returned, puts
    http.disconnect on that full queue: nobody read it, so the connection stayed open for good
    while the client kept uploading. The guard reads what is left until the request is over."""
    queue_full = trio.Event()

    async def slow_refusal(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await queue_full.wait()  # the upload fills hypercorn's queue before the app answers
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"no"})

    with trio.fail_after(TIMEOUT):
        async with open_test_server(slow_refusal) as url, open_raw_connection(url) as conn:
            await conn.send_head("POST", "/upload", [("Content-Length", str(64 << 20))])

            async def upload() -> None:
                chunk = b"x" * (64 << 10)
                try:
                    for _ in range(1024):
                        # A send that stalls means the server stopped reading: its queue is full.
                        with trio.move_on_after(0.5) as stalled:
                            await conn.send(chunk)
                        if stalled.cancelled_caught:
                            queue_full.set()
                            await conn.send(chunk)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the server closed the connection: what this test waits for

            async with trio.open_nursery() as nursery:
                nursery.start_soon(upload)
                r = await conn.response()
                assert r.status == 413 and r.header("connection") == "close"
                while not await conn.closed_by_server():
                    pass
                nursery.cancel_scope.cancel()
