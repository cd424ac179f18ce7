"""Hostile paths: every one answers 400 or 404 and never a byte from outside the store."""

import pytest
import trio

from tests.hub_store.bundles import make_bundle
from tests.runtime.hub.conftest import AUTH

D = "ab" * 32
M = "/storage/models/echo-model/1.0.0/"
HOSTILE = [
    M + "../../../etc/passwd",
    M + "..%2f..%2fetc%2fpasswd",
    M + "%2e%2e/%2e%2e/etc/passwd",
    M + "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    M + "/etc/passwd",
    M + "%2fetc%2fpasswd",
    M + "..%5c..%5cetc%5cpasswd",
    M + "weights.bin%00.txt",
    M + "weights.bin%00",
    M + "a" * 5000,
    M + "a/" * 600 + "x",
    M + "C:%5cWindows%5cwin.ini",
    M + "%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
    M + "%252e%252e/%252e%252e/etc/passwd",
    M + "./weights.bin",
    M + "..",
    "/storage/models/..%2f..%2f/1.0.0/weights.bin",
    "/storage/models/echo-model/..%2f..%2f/weights.bin",
    "/storage/models/echo-model/%00/weights.bin",
    "/storage/services/../../etc/passwd.zip",
    "/storage/services/echo/..%2f..%2fetc%2fpasswd.fbundle",
    "/storage/services/echo/%2e%2e.fbundle",
    "/storage/services/echo/1.0.0.fbundle%00",
    "/storage/services/%2e%2e/1.0.0.fbundle",
    "/storage/services/echo/1.0.0%2f..%2f..%2fx.zip",
    "/storage/services/echo/latest.fbundle/../../../catalog.sqlite3",
    "/storage/services/echo/" + "9" * 300 + ".zip",
    "/blobs/sha256:../../etc/passwd",
    "/blobs/sha256:%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/blobs/..%2fcatalog.sqlite3",
    "/blobs/sha256:" + "A" * 64,
    "/blobs/sha256:" + "0" * 63 + "g",
    "/blobs/sha256:" + D + "%00",
    "/blobs/sha256:" + D + "/../../catalog.sqlite3",
    "/blobs/catalog.sqlite3",
    "/blobs/sha256/ab/" + D,
    "/api/services/..%2f..%2fetc",
    "/api/services/echo/..%2f..%2f/manifest",
    "/api/services/echo/%2e%2e/checksum",
    "/api/models/..%2f..%2fetc%2fpasswd",
    "/catalog.sqlite3",
    "/admin_key.sha256",
    "/tmp/",
]


async def raw_get(url: str, target: str) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode("latin-1"))
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, data


def test_there_are_at_least_30_hostile_paths():
    assert len(HOSTILE) >= 30 and len(set(HOSTILE)) == len(HOSTILE)


async def test_hostile_paths_are_refused(hub, tmp_path):
    with trio.fail_after(60):
        packed = make_bundle(tmp_path)
        r = await hub.put("/api/services/echo/1.0.0", content=packed.path.read_bytes(), headers=AUTH)
        assert r.status_code == 201
        (tmp_path / "hub" / "secret.txt").write_text("root:x:0:0")
        ok = await raw_get(hub.url, M + "weights.bin")
        assert ok[0] == 200  # the probe works for a good path
        failures = []
        for target in HOSTILE:
            status, data = await raw_get(hub.url, target)
            if status not in (400, 404) or b"root:x" in data or b"SQLite format" in data or b"W" * 100 in data:
                failures.append((target[:80], status))
        assert failures == [], failures


@pytest.mark.parametrize("target", ["/blobs/sha256:" + D, "/storage/models/nope/1.0.0/x",
                                    "/api/services/nope", "/storage/services/echo/1.0.0.tar"])
async def test_unknown_things_are_json_404(hub, target):
    with trio.fail_after(30):
        r = await hub.get(target)
        assert r.status_code == 404 and "detail" in r.json()
