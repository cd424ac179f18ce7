"""HTTP over the tunnel: a real worker (hypercorn on 127.0.0.1) behind a node-side forwarder."""

import json
from functools import partial

import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from runtime.tunnel import StreamReset, open_mux
from runtime.tunnel.http import forward_to_worker, send_request
from runtime.tunnel.worker_client import WorkerClient
from tests.runtime.tunnel.test_mux import transport_pair


class Worker:
    """A tiny ASGI worker: /echo, /sse (N events), /forever (streams until cancelled)."""

    def __init__(self):
        self.cancelled = trio.Event()
        self.started_forever = trio.Event()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        if path == "/echo":
            headers = [(b"content-type", b"application/octet-stream"), (b"x-seen-method", scope["method"].encode())]
            await send({"type": "http.response.start", "status": 201, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif path == "/sse":
            n = json.loads(body)["n"]
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            for i in range(n):
                await send({"type": "http.response.body", "body": b"data: %d\n\n" % i, "more_body": True})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        elif path == "/forever":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            self.started_forever.set()
            async with trio.open_nursery() as nursery:

                async def watch_disconnect():
                    # ASGI reports a client that went away as http.disconnect on receive().
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    self.cancelled.set()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch_disconnect)
                while True:
                    await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
                    await trio.sleep(0.01)
        else:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})


async def run_node(mux, base_url, *, task_status=trio.TASK_STATUS_IGNORED):
    async with WorkerClient() as client, trio.open_nursery() as nursery:
        task_status.started()
        while True:
            stream = await mux.accept_stream()
            nursery.start_soon(forward_to_worker, stream, client, base_url)


@pytest.fixture
async def worker(nursery):
    app = Worker()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    binds = await nursery.start(partial(serve, app, config))
    app.base_url = binds[0]
    yield app


@pytest.fixture
async def plane(nursery, worker):
    """The control plane's mux to a node that forwards to the worker."""
    node_end, plane_end = transport_pair()
    ready = trio.Event()
    holder = {}

    async def node_side():
        async with open_mux(node_end, opener=True) as mux:
            await run_node(mux, worker.base_url)

    async def plane_side():
        async with open_mux(plane_end, opener=False) as mux:
            holder["mux"] = mux
            ready.set()
            await trio.sleep_forever()

    nursery.start_soon(node_side)
    nursery.start_soon(plane_side)
    await ready.wait()
    yield holder["mux"]


async def test_request_and_reply_cross_the_tunnel(plane):
    with trio.fail_after(10):
        response = await send_request(plane, "PUT", "/echo", [("x-trace", "1"), ("connection", "close")], b"abc" * 1000)
        assert response.status == 201
        headers = dict(response.headers)
        assert headers["x-seen-method"] == "PUT"
        assert await response.read() == b"abc" * 1000


async def test_streamed_request_body(plane):
    async def chunks():
        for i in range(100):
            yield b"%03d" % i

    with trio.fail_after(10):
        response = await send_request(plane, "POST", "/echo", [], chunks())
        assert await response.read() == b"".join(b"%03d" % i for i in range(100))


async def test_sse_arrives_as_events(plane):
    with trio.fail_after(10):
        response = await send_request(plane, "POST", "/sse", [], b'{"n": 50}')
        assert response.status == 200
        text = (await response.read()).decode()
    events = [line for line in text.split("\n\n") if line]
    assert events[:3] == ["data: 0", "data: 1", "data: 2"] and events[-1] == "data: [DONE]"
    assert len(events) == 51


async def test_closing_the_response_cancels_the_worker_request(plane, worker):
    with trio.fail_after(10):
        response = await send_request(plane, "GET", "/forever")
        await worker.started_forever.wait()
        body = response.body()
        assert (await body.__anext__()).startswith(b"tick")
        response.close()
        with trio.fail_after(1):
            await worker.cancelled.wait()


async def test_unreachable_worker_is_a_502():
    node_end, plane_end = transport_pair()
    with trio.fail_after(10):
        async with open_mux(node_end, opener=True) as node_mux, \
                open_mux(plane_end, opener=False) as mux, trio.open_nursery() as nursery:
            await nursery.start(run_node, node_mux, "http://127.0.0.1:1")
            response = await send_request(mux, "GET", "/health")
            assert response.status == 502
            body = json.loads(await response.read())
            nursery.cancel_scope.cancel()
    assert body["error"]["type"] == "upstream_error"


@pytest.mark.parametrize("body_size", [0, 1 << 20])
async def test_a_reset_before_the_reply_head_is_a_plain_stream_reset(body_size):
    """Callers (the dispatcher's retry) catch TunnelError: never a group, even when the upload
    and the wait for the head both see the reset."""
    node_end, plane_end = transport_pair()
    with trio.fail_after(10):
        async with open_mux(node_end, opener=True) as node_mux, \
                open_mux(plane_end, opener=False, window=64 * 1024) as mux, trio.open_nursery() as nursery:

            async def reset_everything():
                while True:
                    (await node_mux.accept_stream()).reset("node gave up")

            nursery.start_soon(reset_everything)
            with pytest.raises(StreamReset, match="node gave up"):
                await send_request(mux, "POST", "/v1/x", [], b"x" * body_size)
            nursery.cancel_scope.cancel()
