"""The raw-socket health probe against tiny TCP servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import trio

from packer.manifest import HealthCheck
from runtime.node.workers.health import probe, wait_until_healthy
from runtime.node.workers.process import free_port

TIMEOUT = 10
CHECK = HealthCheck("/health", "GET", 5.0)


async def serve(nursery: trio.Nursery, answer: Callable[[bytes], bytes | None]) -> tuple[int, list]:
    """A one-shot-per-connection server: reads the request head, sends answer(head)."""
    requests: list[bytes] = []

    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            await respond(stream)

    async def respond(stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            head += chunk
        requests.append(head)
        reply = answer(head)
        if reply is None:
            await trio.sleep_forever()  # accepts, never answers
        await stream.send_all(reply)

    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1], requests


async def test_2xx_is_healthy_and_the_request_is_well_formed(nursery):
    with trio.fail_after(TIMEOUT):
        port, requests = await serve(nursery, lambda head: b"HTTP/1.1 204 No Content\r\n\r\n")
        result = await probe(port, HealthCheck("/ready?x=1", "HEAD", 5.0))
    assert (result.healthy, result.status, result.detail) == (True, 204, "HTTP 204")
    head = requests[0].decode()
    assert head.startswith("HEAD /ready?x=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{port}\r\n" in head and "Connection: close\r\n" in head


async def test_post_sends_an_empty_body(nursery):
    with trio.fail_after(TIMEOUT):
        port, requests = await serve(nursery, lambda head: b"HTTP/1.0 200 OK\r\n\r\nok")
        assert (await probe(port, HealthCheck("/health", "POST", 5.0))).healthy
    assert requests[0].startswith(b"POST /health ") and b"Content-Length: 0\r\n" in requests[0]


async def test_non_2xx_and_garbage_are_unhealthy(nursery):
    with trio.fail_after(TIMEOUT):
        port, _ = await serve(nursery, lambda head: b"HTTP/1.1 503 Loading\r\n\r\n")
        result = await probe(port, CHECK)
        assert (result.healthy, result.status, result.detail) == (False, 503, "HTTP 503")
        port, _ = await serve(nursery, lambda head: b"SSH-2.0-OpenSSH\r\n")
        result = await probe(port, CHECK)
        assert not result.healthy and result.detail.startswith("not an HTTP answer")
        port, _ = await serve(nursery, lambda head: b"")
        assert not (await probe(port, CHECK)).healthy


async def test_refused_and_silent_servers_are_unhealthy(nursery):
    with trio.fail_after(TIMEOUT):
        result = await probe(free_port(), CHECK)
        assert not result.healthy and "refused" in result.detail
        port, _ = await serve(nursery, lambda head: None)
        result = await probe(port, CHECK, timeout_s=0.2)
    assert (result.healthy, result.detail) == (False, "no answer within 0.2 s")


async def test_wait_until_healthy_polls_until_2xx(nursery):
    answers = iter([b"HTTP/1.1 503 x\r\n\r\n", b"HTTP/1.1 500 x\r\n\r\n",
                    b"HTTP/1.1 200 OK\r\n\r\n"])
    seen = []
    with trio.fail_after(TIMEOUT):
        port, _ = await serve(nursery, lambda head: next(answers))
        result = await wait_until_healthy(port, CHECK, interval_s=0.01, on_probe=seen.append)
    assert result.healthy
    assert [r.detail for r in seen] == ["HTTP 503", "HTTP 500", "HTTP 200"]
