"""serve_file and serve_bytes behind a real hypercorn server on 127.0.0.1:0."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from quart_trio import QuartTrio

from runtime.http import FileChanged, open_test_server, serve_bytes, serve_file

TIMEOUT = 30
CHUNK = 64 * 1024  # small chunks so multi-chunk paths run on small files
SIZE = 5 * CHUNK + 123
MANIFEST = b'{"service_id": "echo", "version": "1.0.0"}'


def make_app(root: Path, completed: list[str]) -> QuartTrio:
    app = QuartTrio(__name__)

    async def count(name: str) -> None:
        completed.append(name)

    @app.route("/files/<name>")
    async def files(name: str):  # type: ignore[no-untyped-def]
        path = root / name
        return await serve_file(path, etag=f"sha-{name}", filename=name, chunk_size=CHUNK,
                                last_modified=True, on_complete=lambda: count(name))

    @app.route("/sized/<name>/<int:size>")
    async def sized(name: str, size: int):  # type: ignore[no-untyped-def]
        try:
            return await serve_file(root / name, etag="x", expected_size=size)
        except FileChanged as error:
            return str(error), 500

    @app.route("/manifest")
    async def manifest():  # type: ignore[no-untyped-def]
        return await serve_bytes(MANIFEST, content_type="application/json")

    return app


@pytest.fixture
def blob(tmp_path: Path) -> bytes:
    data = os.urandom(SIZE)
    (tmp_path / "blob").write_bytes(data)
    (tmp_path / "empty").write_bytes(b"")
    return data


@pytest.fixture
def completed() -> list[str]:
    return []


@pytest.fixture
async def client(tmp_path: Path, blob: bytes, completed: list[str]) -> AsyncIterator[httpx.AsyncClient]:
    async with open_test_server(make_app(tmp_path, completed)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client:
            yield client


async def test_full_get(client: httpx.AsyncClient, blob: bytes, completed: list[str]) -> None:
    with trio.fail_after(TIMEOUT):
        r = await client.get("/files/blob")
    assert r.status_code == 200
    assert r.content == blob
    assert r.headers["content-length"] == str(SIZE)
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["etag"] == '"sha-blob"'
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"].startswith('attachment; filename="blob"')
    assert "last-modified" in r.headers
    assert completed == ["blob"]


async def test_head_sends_headers_only(client: httpx.AsyncClient, completed: list[str]) -> None:
    with trio.fail_after(TIMEOUT):
        r = await client.head("/files/blob")
        ranged = await client.head("/files/blob", headers={"Range": "bytes=-10"})
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-length"] == str(SIZE)
    assert ranged.status_code == 206
    assert ranged.headers["content-range"] == f"bytes {SIZE - 10}-{SIZE - 1}/{SIZE}"
    assert completed == []


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        ("bytes=0-99", 0, 100),
        (f"bytes={CHUNK - 1}-{CHUNK}", CHUNK - 1, CHUNK + 1),  # across a chunk boundary
        ("bytes=1000-", 1000, SIZE),  # open-ended
        ("bytes=-100000000", 0, SIZE),  # suffix longer than the file
        ("bytes=-77", SIZE - 77, SIZE),  # suffix
        (f"bytes={SIZE - 1}-{SIZE - 1}", SIZE - 1, SIZE),  # last byte
        (f"bytes=10-{SIZE * 2}", 10, SIZE),  # end past the file
    ],
)
async def test_single_range(
    client: httpx.AsyncClient, blob: bytes, header: str, start: int, stop: int
) -> None:
    with trio.fail_after(TIMEOUT):
        r = await client.get("/files/blob", headers={"Range": header})
    assert r.status_code == 206
    assert r.content == blob[start:stop]
    assert r.headers["content-range"] == f"bytes {start}-{stop - 1}/{SIZE}"
    assert r.headers["content-length"] == str(stop - start)


@pytest.mark.parametrize("header", [f"bytes={SIZE}-", f"bytes={SIZE + 5}-{SIZE + 9}", "bytes=-0",
                                    f"bytes={'9' * 5000}-"])  # past int()'s digit limit: still 416
async def test_unsatisfiable_range(client: httpx.AsyncClient, header: str) -> None:
    with trio.fail_after(TIMEOUT):
        r = await client.get("/files/blob", headers={"Range": header})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{SIZE}"
    assert r.content == b""


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=9-3", "pages=1-2", "bytes=x", f"bytes={'9' * 5000}-9"])
async def test_multi_or_invalid_range_gets_full_body(
    client: httpx.AsyncClient, blob: bytes, header: str
) -> None:
    with trio.fail_after(TIMEOUT):
        r = await client.get("/files/blob", headers={"Range": header})
    assert r.status_code == 200
    assert r.content == blob


async def test_if_none_match(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TIMEOUT):
        hit = await client.get("/files/blob", headers={"If-None-Match": '"other", "sha-blob"'})
        miss = await client.get("/files/blob", headers={"If-None-Match": '"other"'})
    assert hit.status_code == 304
    assert hit.content == b""
    assert hit.headers["etag"] == '"sha-blob"'
    assert miss.status_code == 200


async def test_if_range(client: httpx.AsyncClient, blob: bytes) -> None:
    with trio.fail_after(TIMEOUT):
        same = await client.get("/files/blob",
                                headers={"Range": "bytes=10-19", "If-Range": '"sha-blob"'})
        changed = await client.get("/files/blob",
                                   headers={"Range": "bytes=10-19", "If-Range": '"old"'})
    assert same.status_code == 206
    assert same.content == blob[10:20]
    assert changed.status_code == 200
    assert changed.content == blob


async def test_empty_file(client: httpx.AsyncClient, completed: list[str]) -> None:
    with trio.fail_after(TIMEOUT):
        r = await client.get("/files/empty")
        ranged = await client.get("/files/empty", headers={"Range": "bytes=0-"})
    assert (r.status_code, r.content, r.headers["content-length"]) == (200, b"", "0")
    assert ranged.status_code == 200
    assert completed == ["empty", "empty"]


async def test_on_complete_only_for_bodies(client: httpx.AsyncClient, completed: list[str]) -> None:
    with trio.fail_after(TIMEOUT):
        await client.get("/files/blob", headers={"Range": "bytes=-10"})
        await client.get("/files/blob", headers={"If-None-Match": '"sha-blob"'})
        await client.get("/files/blob", headers={"Range": f"bytes={SIZE}-"})
        await client.head("/files/blob")
    assert completed == ["blob"]


@pytest.mark.parametrize("etag", ['"quoted"', "sp ace", "new\nline", "", "caf\u00e9"])
async def test_bad_etag_is_a_programming_error(tmp_path: Path, etag: str) -> None:
    with pytest.raises(ValueError, match="etag must be"):
        await serve_bytes(b"x", etag=etag, request_headers={}, method="GET")


async def test_missing_file_is_an_error(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TIMEOUT):
        r = await client.get("/files/nope")
    assert r.status_code == 500  # FileNotFoundError reached quart; the hub maps it to 404


async def test_directory_is_not_served(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with trio.fail_after(TIMEOUT), pytest.raises(FileNotFoundError, match="not a regular file"):
        await serve_file(tmp_path / "dir", etag="d", request_headers={}, method="GET")


async def test_expected_size_mismatch(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TIMEOUT):
        ok = await client.get(f"/sized/blob/{SIZE}")
        bad = await client.get(f"/sized/blob/{SIZE + 1}")
    assert ok.status_code == 200
    assert bad.status_code == 500
    assert "expected" in bad.text


async def test_serve_bytes(client: httpx.AsyncClient) -> None:
    etag = hashlib.sha256(MANIFEST).hexdigest()
    with trio.fail_after(TIMEOUT):
        r = await client.get("/manifest")
        part = await client.get("/manifest", headers={"Range": "bytes=-8"})
        cached = await client.get("/manifest", headers={"If-None-Match": f'"{etag}"'})
        head = await client.head("/manifest")
    assert r.content == MANIFEST
    assert r.headers["etag"] == f'"{etag}"'
    assert r.headers["content-type"] == "application/json"
    assert part.status_code == 206
    assert part.content == MANIFEST[-8:]
    assert cached.status_code == 304
    assert head.headers["content-length"] == str(len(MANIFEST))
    assert head.content == b""


async def test_concurrent_range_slices_reassemble(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)  # larger than one 1 MiB chunk
    (tmp_path / "big").write_bytes(data)
    app = QuartTrio(__name__)

    @app.route("/big")
    async def big():  # type: ignore[no-untyped-def]
        return await serve_file(tmp_path / "big", etag="big")

    slices = 100
    step = -(-len(data) // slices)
    parts: dict[int, bytes] = {}

    async def fetch(client: httpx.AsyncClient, start: int) -> None:
        stop = min(start + step, len(data))
        r = await client.get("/big", headers={"Range": f"bytes={start}-{stop - 1}"})
        assert r.status_code == 206
        parts[start] = r.content

    with trio.fail_after(TIMEOUT * 2):
        async with open_test_server(app) as url:
            limits = httpx.Limits(max_connections=slices)
            async with httpx.AsyncClient(base_url=url, limits=limits, timeout=TIMEOUT) as client:
                async with trio.open_nursery() as nursery:
                    for start in range(0, len(data), step):
                        nursery.start_soon(fetch, client, start)
    assert len(parts) == slices
    joined = b"".join(parts[k] for k in sorted(parts))
    assert hashlib.sha256(joined).hexdigest() == hashlib.sha256(data).hexdigest()


async def test_slow_download_outlives_quart_response_timeout(tmp_path: Path) -> None:
    # quart-trio cuts any response at RESPONSE_TIMEOUT (60 s by default) without a word;
    # a large download to a slow client must not be truncated by it.
    path = tmp_path / "large"
    with path.open("wb") as f:
        f.truncate(32 * 1024 * 1024)  # more than loopback socket buffers hold
    app = QuartTrio(__name__)
    app.config["RESPONSE_TIMEOUT"] = 0.2

    @app.route("/large")
    async def large():  # type: ignore[no-untyped-def]
        return await serve_file(path, etag="large")

    with trio.fail_after(TIMEOUT):
        async with open_test_server(app) as url:
            async with httpx.AsyncClient(timeout=TIMEOUT) as client:
                async with client.stream("GET", f"{url}/large") as r:
                    got = 0
                    async for chunk in r.aiter_raw():
                        if got == 0:
                            await trio.sleep(0.5)  # the slow client this test is about
                        got += len(chunk)
    assert got == 32 * 1024 * 1024


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
async def test_client_disconnect_closes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "large"
    with path.open("wb") as f:
        f.truncate(256 * 1024 * 1024)  # sparse: far more than the socket buffers hold
    started = trio.Event()
    app = QuartTrio(__name__)

    @app.route("/large")
    async def large():  # type: ignore[no-untyped-def]
        started.set()
        return await serve_file(path, etag="large")

    def large_is_open() -> bool:
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                    return True
            except OSError:
                pass
        return False

    with trio.fail_after(TIMEOUT):
        async with open_test_server(app) as url:
            baseline = _open_fds()
            async with httpx.AsyncClient(timeout=TIMEOUT) as client:
                async with client.stream("GET", f"{url}/large") as r:
                    assert r.status_code == 200
                    got = 0
                    async for chunk in r.aiter_raw():
                        got += len(chunk)
                        if got >= 4 * 1024 * 1024:
                            break
                    assert large_is_open()
            # The client closed its connection mid-body; the server must notice and close.
            # The kernel's fd table has no event to wait on, so poll it (under fail_after).
            while large_is_open() or _open_fds() > baseline:  # noqa: ASYNC110
                await trio.sleep(0.01)
    assert not large_is_open()
