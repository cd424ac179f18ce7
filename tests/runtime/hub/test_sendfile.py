"""Large blobs go out with os.sendfile (runtime/hub/sendfile.py): same answers as the app's path."""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from dataclasses import replace

import httpx
import trio
import trio.testing

from hub_store import open_data_dir
from runtime.api import hash_key
from runtime.http import open_test_server
from runtime.hub import HubSettings, HubState, create_hub_app
from runtime.hub.sendfile import blob_router

from .conftest import ADMIN_KEY

SIZE = 3 * 1024 * 1024 + 17  # over SMALL_BLOB, not a multiple of anything


@asynccontextmanager
async def sendfile_hub(data_dir, **settings):
    """A hub served with the zero-copy router; yields (client on one connection, answered paths, state)."""
    data = open_data_dir(data_dir)
    try:
        state = HubState(data, replace(HubSettings(data_dir=data_dir), **settings), hash_key(ADMIN_KEY),
                         limiter=trio.CapacityLimiter(8))
        router = blob_router(state)
        answered: list[str] = []

        async def counting(request):
            answer = await router(request)
            if answer is not None:
                answered.append(f"{request.method} {answer.status}")
            return answer

        async with open_test_server(create_hub_app(state), file_router=counting) as url:
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
                yield client, answered, state
    finally:
        data.close()


def corrupt(path) -> None:
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.write(b"X")


def without_date(headers: httpx.Headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k not in ("date", "server")}


async def test_large_blob_is_sent_with_sendfile_and_answers_like_the_app(tmp_path):
    payload = os.urandom(SIZE)
    async with sendfile_hub(tmp_path / "hub") as (client, answered, state):
        digest = state.data.store.put_bytes(payload).digest
        url = f"/blobs/sha256:{digest}"
        first = await client.get(url)
        second = await client.get(url)
        assert first.status_code == second.status_code == 200
        assert first.content == second.content == payload
        assert answered == ["GET 200", "GET 200"]

    # The same request through the app alone (no router) has the same headers.
    data = open_data_dir(tmp_path / "hub")
    try:
        plain_state = HubState(data, HubSettings(data_dir=tmp_path / "hub"), hash_key(ADMIN_KEY),
                               limiter=trio.CapacityLimiter(8))
        async with open_test_server(create_hub_app(plain_state)) as plain_url:
            async with httpx.AsyncClient(base_url=plain_url, timeout=30) as plain:
                reference = await plain.get(url)
    finally:
        data.close()
    assert reference.content == payload
    assert without_date(second.headers) == without_date(reference.headers)


async def test_ranges_head_and_conditional_requests_on_one_connection(tmp_path):
    payload = os.urandom(SIZE)
    async with sendfile_hub(tmp_path / "hub") as (client, answered, state):
        digest = state.data.store.put_bytes(payload).digest
        url = f"/blobs/sha256:{digest}"
        part = await client.get(url, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206
        assert part.content == payload[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{SIZE}"
        tail = await client.get(url, headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == payload[-10:]
        head = await client.head(url)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(SIZE)
        assert answered == ["GET 206", "GET 206", "HEAD 200"]
        # Declined by the router: hypercorn gets the connection and the bytes already read.
        cached = await client.get(url, headers={"If-None-Match": f'"{digest}"'})
        assert cached.status_code == 304 and cached.content == b""
        past_end = await client.get(url, headers={"Range": f"bytes={SIZE}-"})
        assert past_end.status_code == 416
        missing = await client.get("/blobs/sha256:" + "0" * 64)
        assert missing.status_code == 404 and "detail" in missing.json()
        again = await client.get(url)
        assert again.status_code == 200 and again.content == payload
        assert len(answered) == 3  # the connection now belongs to hypercorn


async def test_a_corrupt_large_blob_is_quarantined_and_answered_500(tmp_path):
    payload = os.urandom(SIZE)
    async with sendfile_hub(tmp_path / "hub") as (client, answered, state):
        digest = state.data.store.put_bytes(payload).digest
        path = state.data.store.path(digest)
        corrupt(path)
        response = await client.get(f"/blobs/sha256:{digest}")
        assert response.status_code == 500
        assert "detail" in response.json()
        assert not path.exists()
        assert answered == ["GET 500"]
        again = await client.get(f"/blobs/sha256:{digest}")
        assert again.status_code == 404


async def test_a_private_hub_is_never_answered_without_the_app(tmp_path):
    async with sendfile_hub(tmp_path / "hub", private=True) as (client, answered, state):
        digest = state.data.store.put_bytes(os.urandom(SIZE)).digest
        response = await client.get(f"/blobs/sha256:{digest}")
        assert response.status_code == 401
        assert answered == []


async def test_a_request_with_a_body_or_http_1_0_goes_to_the_app(tmp_path):
    payload = os.urandom(SIZE)
    async with sendfile_hub(tmp_path / "hub") as (client, answered, state):
        digest = state.data.store.put_bytes(payload).digest
        host, port = client.base_url.host, client.base_url.port
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(f"GET /blobs/sha256:{digest} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
            received = bytearray()
            with trio.fail_after(10):
                while data := await stream.receive_some(1 << 20):
                    received += data
        assert received.startswith(b"HTTP/1.1 200")
        assert received.endswith(payload)
        assert answered == []


@asynccontextmanager
async def bare_server(data_dir, **limits):
    data = open_data_dir(data_dir)
    try:
        state = HubState(data, HubSettings(data_dir=data_dir), hash_key(ADMIN_KEY), limiter=trio.CapacityLimiter(8))
        async with open_test_server(create_hub_app(state), file_router=blob_router(state), **limits) as url:
            yield httpx.URL(url)
    finally:
        data.close()


async def test_a_head_that_never_completes_is_closed_after_the_keep_alive_timeout(tmp_path):
    async with bare_server(tmp_path / "hub", keep_alive_timeout=0.5) as url:
        stream = await trio.open_tcp_stream(url.host, url.port)
        async with stream:
            await stream.send_all(b"GET /blobs/sha256:" + b"a" * 64 + b" HTTP/1.1\r\nHost")
            with trio.fail_after(5):
                assert await stream.receive_some(1024) == b""


async def test_an_idle_connection_does_not_hold_up_the_shutdown(tmp_path):
    with trio.fail_after(10):
        async with bare_server(tmp_path / "hub", keep_alive_timeout=60) as url:
            stream = await trio.open_tcp_stream(url.host, url.port)
            await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(2):
            assert await stream.receive_some(1024) == b""
        await stream.aclose()


async def test_small_blobs_are_answered_ahead_of_the_app_with_the_apps_headers(tmp_path):
    sizes = (0, 4096, 100_000)  # empty, inline on the loop, and over INLINE_BLOB (a thread)
    async with sendfile_hub(tmp_path / "hub") as (client, answered, state):
        payloads = [os.urandom(n) for n in sizes]
        digests = [state.data.store.put_bytes(p).digest for p in payloads]
        fast = [await client.get(f"/blobs/sha256:{d}") for d in digests]
        part = await client.get(f"/blobs/sha256:{digests[1]}", headers={"Range": "bytes=10-19"})
        head = await client.head(f"/blobs/sha256:{digests[2]}")
        assert [r.content for r in fast] == payloads
        assert part.status_code == 206 and part.content == payloads[1][10:20]
        assert part.headers["content-range"] == "bytes 10-19/4096"
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == "100000"
        assert answered == ["GET 200"] * 3 + ["GET 206", "HEAD 200"]
        cached = await client.get(f"/blobs/sha256:{digests[1]}", headers={"If-None-Match": f'"{digests[1]}"'})
        assert cached.status_code == 304 and len(answered) == 5  # declined: the app answers

    data = open_data_dir(tmp_path / "hub")
    try:
        plain_state = HubState(data, HubSettings(data_dir=tmp_path / "hub"), hash_key(ADMIN_KEY),
                               limiter=trio.CapacityLimiter(8))
        async with open_test_server(create_hub_app(plain_state)) as plain_url:
            async with httpx.AsyncClient(base_url=plain_url, timeout=30) as plain:
                reference = [await plain.get(f"/blobs/sha256:{d}") for d in digests]
    finally:
        data.close()
    for ours, theirs in zip(fast, reference, strict=True):
        assert ours.status_code == theirs.status_code == 200
        assert without_date(ours.headers) == without_date(theirs.headers)


async def test_a_corrupt_small_blob_is_quarantined_and_answered_500(tmp_path):
    async with sendfile_hub(tmp_path / "hub") as (client, answered, state):
        digest = state.data.store.put_bytes(os.urandom(4096)).digest
        path = state.data.store.path(digest)
        corrupt(path)
        response = await client.get(f"/blobs/sha256:{digest}")
        assert response.status_code == 500 and "detail" in response.json()
        assert not path.exists()
        assert answered == ["GET 500"]
        assert (await client.get(f"/blobs/sha256:{digest}")).status_code == 404
