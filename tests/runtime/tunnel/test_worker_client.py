"""The node's HTTP/1.1 client against a real TCP server on 127.0.0.1 that scripts its replies."""

from __future__ import annotations

import h11
import pytest
import trio

from runtime.tunnel.worker_client import WorkerClient, WorkerConnectionError, WorkerUnreachable


class Server:
    """Answers each request with `reply(request, body)` -> raw bytes; counts connections."""

    def __init__(self, reply):
        self.reply = reply
        self.connections = 0
        self.requests: list[tuple[h11.Request, bytes]] = []
        self.url = ""

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream):
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                request, body = None, b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        conn.receive_data(data)
                        if not data and conn.their_state is h11.IDLE:
                            return
                        continue
                    if isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                self.requests.append((request, body))
                action = self.reply(request, body)
                if action == "close":  # hang up without answering
                    return
                await stream.send_all(action)
                if b"connection: close" in action.lower():
                    return
                conn = h11.Connection(h11.SERVER)  # the script wrote the reply bytes itself


def ok(body=b"hello", extra=b""):
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


@pytest.fixture
async def serve(nursery):
    async def start(reply):
        server = Server(reply)
        await nursery.start(server.serve)
        return server
    return start


async def fetch(client, url, body=b"{}"):
    response = await client.send("POST", url + "/v1/x?y=1", [("content-type", "application/json"),
                                                              ("host", "evil"), ("content-length", "999")], body)
    try:
        return response.status, dict(response.headers), b"".join([c async for c in response.iter_raw()])
    finally:
        await response.aclose()


async def test_requests_reuse_one_kept_alive_connection(serve):
    server = await serve(lambda req, body: ok(b"got " + body))
    async with WorkerClient() as client:
        with trio.fail_after(10):
            for i in range(3):
                status, headers, body = await fetch(client, server.url, b"n%d" % i)
                assert (status, body) == (200, b"got n%d" % i)
    assert server.connections == 1
    request, _ = server.requests[0]
    # Host and Content-Length are the client's own, whatever the tunnel head said.
    assert request.target == b"/v1/x?y=1" and (b"host", server.url[7:].encode()) in request.headers
    assert (b"content-length", b"2") in request.headers and (b"host", b"evil") not in request.headers


async def test_a_chunked_reply_is_decoded_and_a_closing_one_is_not_reused(serve):
    chunked = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    server = await serve(lambda req, body: chunked)
    async with WorkerClient() as client:
        with trio.fail_after(10):
            assert (await fetch(client, server.url))[2] == b"hello world"
            assert (await fetch(client, server.url))[2] == b"hello world"
    assert server.connections == 2


async def test_a_keep_alive_the_worker_closed_is_retried_on_a_new_connection(serve):
    answers = iter([ok(b"first"), "close", ok(b"second")])
    server = await serve(lambda req, body: next(answers))
    async with WorkerClient() as client:
        with trio.fail_after(10):
            assert (await fetch(client, server.url))[2] == b"first"
            assert (await fetch(client, server.url))[2] == b"second"
    assert server.connections == 2 and len(server.requests) == 3


async def test_when_the_worker_closed_its_idle_connections_one_retry_is_enough(serve):
    server = await serve(lambda req, body: ok(b"fine"))
    async with WorkerClient() as client:
        with trio.fail_after(10):
            # Three connections, kept alive, all read to their end.
            responses = [await client.send("GET", server.url + "/", [], b"") for _ in range(3)]
            for response in responses:
                assert b"".join([c async for c in response.iter_raw()]) == b"fine"
                await response.aclose()
            idle = client._idle[("127.0.0.1", int(server.url.rsplit(":", 1)[1]))]
            assert len(idle) == 3
            for conn in idle:  # as a worker's keep-alive timeout would
                conn.stream.socket.shutdown(trio.socket.SHUT_RDWR)
            assert (await fetch(client, server.url))[2] == b"fine"
    assert server.connections == 4


async def test_a_fresh_connection_that_fails_is_not_retried(serve):
    server = await serve(lambda req, body: "close")
    async with WorkerClient() as client:
        with trio.fail_after(10), pytest.raises(WorkerConnectionError):
            await fetch(client, server.url)
    assert len(server.requests) == 1


async def test_a_reply_cut_short_raises_and_an_unread_one_is_not_reused(serve):
    server = await serve(lambda req, body: b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\nconnection: close\r\n\r\nshort")
    async with WorkerClient() as client:
        with trio.fail_after(10):
            response = await client.send("GET", server.url + "/", [], b"")
            with pytest.raises(WorkerConnectionError):
                async for _ in response.iter_raw():
                    pass
            await response.aclose()
    half_read = await serve(lambda req, body: ok(b"x" * 1000))
    async with WorkerClient() as client:
        with trio.fail_after(10):
            response = await client.send("GET", half_read.url + "/", [], b"")
            await response.aclose()  # abandoned before its body: the connection cannot be reused
            assert (await fetch(client, half_read.url))[2] == b"x" * 1000
    assert half_read.connections == 2


async def test_nothing_listening_is_unreachable():
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        async with WorkerClient() as client:
            with trio.fail_after(10), pytest.raises(WorkerUnreachable, match=f"127.0.0.1:{port}"):
                await client.send("GET", f"http://127.0.0.1:{port}/", [], b"")
    async with WorkerClient() as client:
        with pytest.raises(WorkerUnreachable, match="not an http"):
            await client.send("GET", "unix:///tmp/x", [], b"")


async def test_idle_connections_close_with_the_client(serve):
    server = await serve(lambda req, body: ok())
    client = WorkerClient()
    async with client:
        await fetch(client, server.url)
        (conn,) = client._idle[("127.0.0.1", int(server.url.rsplit(":", 1)[1]))]
    assert not client._idle
    with pytest.raises(trio.ClosedResourceError):
        await conn.stream.send_all(b"x")



async def early_413(stream):
    """Read the request head only, answer 413 and close without reading the body."""
    async with stream:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
        body = b'{"error": "too large"}'
        await stream.send_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: %d\r\n"
                              b"connection: close\r\n\r\n%s" % (len(body), body))


@pytest.mark.parametrize("size", [100, 16 << 20])
async def test_a_reply_sent_before_the_body_was_read_is_returned(nursery, size):
    """A worker's early 413 is its answer, not a broken pipe (issue 12, item 10)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(trio.serve_listeners, early_413, listeners)
    with trio.fail_after(10):
        async with WorkerClient() as client:
            response = await client.send("POST", f"http://127.0.0.1:{port}/v1/x", [], b"x" * size)
            assert response.status == 413
            assert b"".join([c async for c in response.iter_raw()]) == b'{"error": "too large"}'
            await response.aclose()
