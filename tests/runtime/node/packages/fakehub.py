"""A small hub speaking the node's HTTP contract on raw sockets, with injectable faults.

Raw sockets (not a framework) so a test can make it misbehave exactly: answer 200
to a Range request, change the ETag midway, trickle, send more than it declares,
serve corrupt bytes, or hang up after N bytes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from packer.manifest import FileEntry, Manifest
from packer.semver import parse_version


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


# A fault gets (hub, stream, request, blob bytes, attempt number from 1); None = behave.
Fault = Callable[["FakeHub", trio.SocketStream, Request, bytes, int], Awaitable[None]]


@dataclass
class FakeHub:
    manifests: dict[tuple[str, str], bytes] = field(default_factory=dict)
    signatures: dict[tuple[str, str], bytes] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    log: list[Request] = field(default_factory=list)
    url: str = ""

    def publish(self, service: str, version: str, files: dict[str, bytes | tuple[bytes, int]],
                *, signature: bytes | None = None) -> bytes:
        """Add a version (path -> bytes or (bytes, mode)); returns the manifest bytes."""
        entries = []
        for path, data in files.items():
            data, mode = data if isinstance(data, tuple) else (data, 0o644)
            digest = hashlib.sha256(data).hexdigest()
            self.blobs[digest] = data
            entries.append(FileEntry(path=path, size=len(data), mode=mode, sha256=digest))
        manifest = Manifest(service_id=service, version=version, startup_command="python main.py")
        raw = manifest.with_files(entries, "2026-11-22T00:00:00Z").canonical_bytes()
        self.manifests[(service, version)] = raw
        if signature is not None:
            self.signatures[(service, version)] = signature
        return raw

    def blob_requests(self, digest: str) -> list[Request]:
        return [r for r in self.log if r.path == f"/blobs/sha256:{digest}"]

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        task_status.started(self.url)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            async with stream:
                req = await _read_request(stream)
                if req is None:
                    return
                self.log.append(req)
                await self._route(stream, req)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _route(self, stream: trio.SocketStream, req: Request) -> None:
        m = re.fullmatch(r"/api/services/([^/]+)/([^/]+)/(manifest|signature)", req.path)
        if m:
            service, version, what = m.groups()
            if version == "latest":
                known = [v for (s, v) in self.manifests if s == service]
                version = max(known, key=parse_version) if known else "none"
            table = self.manifests if what == "manifest" else self.signatures
            body = table.get((service, version))
            if body is None:
                await respond(stream, 404, b"not found")
                return
            headers = {"X-Flowctl-Version": version}
            if what == "manifest":
                headers["ETag"] = f'"{hashlib.sha256(body).hexdigest()}"'
            await respond(stream, 200, body, headers)
            return
        m = re.fullmatch(r"/blobs/sha256:([0-9a-f]{64})", req.path)
        if m and m.group(1) in self.blobs:
            digest = m.group(1)
            fault = self.faults.get(digest)
            if fault is not None:
                attempt = len(self.blob_requests(digest))
                await fault(self, stream, req, self.blobs[digest], attempt)
                return
            await send_blob(stream, req, self.blobs[digest], f'"{digest}"')
            return
        await respond(stream, 404, b"not found")


async def _read_request(stream: trio.SocketStream) -> Request | None:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        if not data:
            return None
        buf += data
    head = buf.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    method, path, _ = head[0].split(" ", 2)
    headers = {}
    for line in head[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return Request(method, path, headers)


async def respond(stream: trio.SocketStream, status: int, body: bytes,
                  headers: dict[str, str] | None = None) -> None:
    reason = {200: "OK", 206: "Partial Content", 404: "Not Found", 416: "Range Not Satisfiable"}
    lines = [f"HTTP/1.1 {status} {reason.get(status, 'X')}", f"Content-Length: {len(body)}",
             "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


async def send_blob(stream: trio.SocketStream, req: Request, data: bytes, etag: str, *,
                    honour_range: bool = True, cut_after: int | None = None,
                    extra: bytes = b"", trickle: tuple[int, float] | None = None,
                    declared: int | None = None) -> None:
    """Serve `data` (with Range unless told not to), optionally misbehaving on the way."""
    start, status = 0, 200
    rng = req.headers.get("range")
    m = re.fullmatch(r"bytes=(\d+)-", rng or "")
    if honour_range and m:
        start, status = int(m.group(1)), 206
        if start >= len(data):
            await respond(stream, 416, b"", {"Content-Range": f"bytes */{len(data)}"})
            return
    body = data[start:]
    length = declared if declared is not None else len(body)
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {length}", "Connection: close",
             f"ETag: {etag}", "Accept-Ranges: bytes"]
    if status == 206:
        lines.append(f"Content-Range: bytes {start}-{len(data) - 1}/{len(data)}")
    await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
    if cut_after is not None:
        body = body[:cut_after]
    if trickle is not None:
        piece, pause = trickle
        for i in range(0, len(body), piece):
            await stream.send_all(body[i:i + piece])
            await trio.sleep(pause)
        return
    view = memoryview(body + extra)
    for i in range(0, len(view), 1 << 20):
        await stream.send_all(view[i:i + (1 << 20)])
