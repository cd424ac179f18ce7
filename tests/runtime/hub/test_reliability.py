"""Faults with a real server: concurrent ranges, cut-off uploads, corrupt blobs, GC during publish,
a full disk."""

import hashlib
import json
import os

import httpx
import pytest
import trio

from tests.hub_store.bundles import make_bundle
from tests.runtime.hub.conftest import ADMIN_KEY, AUTH, running_hub
from tests.tmpfs import small_tmpfs

MIB = 1 << 20


async def poll_until(predicate) -> None:
    """Poll a condition (the caller's fail_after is the deadline)."""
    while True:
        if predicate():
            return
        await trio.sleep(0.01)


async def test_100_concurrent_range_slices_reassemble(hub, tmp_path):
    with trio.fail_after(60):
        payload = os.urandom(3 * 1024 * 1024 + 17)
        packed = make_bundle(tmp_path, files={"blob.bin": payload})
        assert (await hub.put("/api/services/echo/1.0.0", content=packed.path.read_bytes(),
                              headers=AUTH)).status_code == 201
        digest = hashlib.sha256(payload).hexdigest()
        n = 100
        step = -(-len(payload) // n)
        parts: dict[int, bytes] = {}
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(base_url=hub.url, limits=limits, timeout=30) as client:
            async def fetch(i: int) -> None:
                start, stop = i * step, min((i + 1) * step, len(payload)) - 1
                r = await client.get(f"/blobs/sha256:{digest}", headers={"Range": f"bytes={start}-{stop}"})
                assert r.status_code == 206
                parts[i] = r.content

            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(fetch, i)
        whole = b"".join(parts[i] for i in range(n))
        assert hashlib.sha256(whole).hexdigest() == digest


async def test_publish_cut_off_mid_upload_leaves_no_trace(hub, tmp_path):
    with trio.fail_after(60):
        packed = make_bundle(tmp_path, files={"big.bin": os.urandom(2 * 1024 * 1024)})
        data = packed.path.read_bytes()
        host, port = hub.url.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        head = (f"PUT /api/services/echo/1.0.0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
                f"Content-Length: {len(data)}\r\nContent-Type: application/octet-stream\r\n\r\n")
        await stream.send_all(head.encode() + data[: len(data) // 2])
        store, catalog = hub.state.data.store, hub.state.data.catalog
        await poll_until(lambda: list(store.iter_temp()))  # the upload is being spooled
        await stream.aclose()
        await poll_until(lambda: not list(store.iter_temp()))  # the hub noticed and cleaned up
        assert catalog.services() == [] and catalog.live_leases() == set()
        assert list(store.iter_blobs()) == []
        # and the same upload, complete, then works
        r = await hub.put("/api/services/echo/1.0.0", content=data, headers=AUTH)
        assert r.status_code == 201


async def test_short_body_with_content_length_is_refused(hub, tmp_path):
    with trio.fail_after(30):
        packed = make_bundle(tmp_path)
        data = packed.path.read_bytes()
        host, port = hub.url.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            head = (f"PUT /api/services/echo/1.0.0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
                    f"Content-Length: {len(data) + 100}\r\n\r\n")
            await stream.send_all(head.encode() + data)
            await stream.send_eof()
            reply = b""
            while chunk := await stream.receive_some(65536):
                reply += chunk
        assert hub.state.data.catalog.services() == []


@pytest.mark.parametrize("size", [5000, 600_000], ids=["small-read-whole", "large-verified-once"])
async def test_corrupt_blob_is_detected_when_served(hub, tmp_path, size):
    with trio.fail_after(30):
        packed = make_bundle(tmp_path, files={"weights.bin": os.urandom(size)})
        await hub.put("/api/services/echo/1.0.0", content=packed.path.read_bytes(), headers=AUTH)
        entry = packed.manifest.files[0]
        url = f"/blobs/sha256:{entry.sha256}"
        assert (await hub.get(url)).status_code == 200
        path = hub.state.data.store.path(entry.sha256)
        os.chmod(path, 0o644)
        path.write_bytes(b"X" * entry.size)  # same size, other bytes (and a new mtime)
        r = await hub.get(url)
        assert r.status_code == 500 and "corrupt" in r.json()["detail"]
        assert (await hub.get(url)).status_code == 404  # quarantined
        assert list((hub.state.data.root / "quarantine").iterdir())
        report = (await hub.post("/api/admin/fsck", headers=AUTH)).json()
        assert report["ok"] is False and report["missing"][0]["digest"] == f"sha256:{entry.sha256}"


async def test_fsck_reports_corruption(hub, tmp_path):
    with trio.fail_after(30):
        packed = make_bundle(tmp_path)
        await hub.put("/api/services/echo/1.0.0", content=packed.path.read_bytes(), headers=AUTH)
        path = hub.state.data.store.path(packed.manifest.files[0].sha256)
        os.chmod(path, 0o644)
        path.write_bytes(b"rot")
        report = (await hub.post("/api/admin/fsck", headers=AUTH, params={"quarantine": "true"})).json()
        assert report["corrupt"] == [f"sha256:{packed.manifest.files[0].sha256}"]
        assert report["quarantined"] == report["corrupt"]


async def test_gc_in_a_loop_during_publishes(hub, tmp_path):
    with trio.fail_after(120):
        shared = os.urandom(300_000)
        bundles = [make_bundle(tmp_path / str(i), f"1.0.{i}",
                               files={"model.bin": shared, "code.py": f"v = {i}\n".encode()})
                   for i in range(12)]
        done = trio.Event()
        passes = 0

        async def gc_loop():
            nonlocal passes
            while not done.is_set():
                r = await hub.post("/api/admin/gc", headers=AUTH)
                assert r.status_code == 200
                passes += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(gc_loop)
            for packed in bundles:
                r = await hub.put(f"/api/services/echo/{packed.manifest.version}",
                                  content=packed.path.read_bytes(), headers=AUTH)
                assert r.status_code == 201, r.text
            done.set()
        assert passes >= 2
        report = (await hub.post("/api/admin/fsck", headers=AUTH)).json()
        assert report["ok"] is True, report
        for packed in bundles:
            r = await hub.get(f"/storage/services/echo/{packed.manifest.version}.fbundle")
            assert hashlib.sha256(r.content).hexdigest() == packed.sha256


async def read_response(stream) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body, read off a raw stream."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        assert chunk, f"connection closed before the response's head: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    while len(body) < int(headers["content-length"]):
        chunk = await stream.receive_some(65536)
        assert chunk, "connection closed inside the response's body"
        body += chunk
    return int(status_line.split()[1]), headers, body


async def test_a_publish_that_would_eat_the_reserve_is_refused_before_its_body_is_read(tmp_path):
    with small_tmpfs(tmp_path / "disk", 2 * MIB) as disk, trio.fail_after(30):
        async with running_hub(disk / "hub", disk_reserve_bytes=MIB // 2) as (url, state):
            announced = 3 * MIB // 2  # fits on the disk, but not above the reserve
            host, port = url.removeprefix("http://").split(":")
            async with await trio.open_tcp_stream(host, int(port)) as stream:
                await stream.send_all((f"PUT /api/services/echo/1.0.0 HTTP/1.1\r\nHost: x\r\n"
                                       f"Authorization: Bearer {ADMIN_KEY}\r\n"
                                       f"Content-Length: {announced}\r\n\r\n").encode())  # no body
                status, _, body = await read_response(stream)
            assert status == 507
            detail = json.loads(body)["detail"]
            assert detail.startswith(f"not enough disk space for a bundle of {announced} bytes: "
                                     f"needs {announced} bytes, ") and "\n" not in detail
            assert detail.endswith(f"(of which {MIB // 2} are kept in reserve)")
            assert list(state.data.store.iter_temp()) == []


async def test_the_default_reserve_is_kept_free(tmp_path):
    packed = make_bundle(tmp_path)
    with trio.fail_after(30):
        async with running_hub(tmp_path / "hub", free_space=lambda _: 200 * MIB) as (url, state):
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                r = await client.put("/api/services/echo/1.0.0", content=packed.path.read_bytes(), headers=AUTH)
            assert r.status_code == 507 and "of which 268435456 are kept in reserve" in r.json()["detail"]
            assert state.data.catalog.services() == []


async def test_a_disk_that_fills_up_during_the_upload_answers_507_and_keeps_nothing(tmp_path):
    noise = os.urandom(3 * MIB)  # more than the disk holds, and no Content-Length to check up front

    async def chunked():
        for start in range(0, len(noise), 64 * 1024):
            yield noise[start:start + 64 * 1024]

    small = make_bundle(tmp_path).path.read_bytes()
    with small_tmpfs(tmp_path / "disk", 2 * MIB) as disk, trio.fail_after(60):
        async with running_hub(disk / "hub", disk_reserve_bytes=0) as (url, state):
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                r = await client.put("/api/services/echo/1.0.0", content=chunked(), headers=AUTH)
                assert r.status_code == 507, r.text
                assert r.json()["detail"] == ("the hub's disk is full: the upload of echo@1.0.0 could not "
                                              "be stored; free some space and retry")
                assert list(state.data.store.iter_temp()) == [] and state.data.catalog.services() == []
                # The space came back with the clean-up: the next publish goes through.
                r = await client.put("/api/services/echo/1.0.0", content=small, headers=AUTH)
                assert r.status_code == 201, r.text
