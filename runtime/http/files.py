"""Download responses for quart-trio: files streamed in 1 MiB chunks, Range and ETag done right.

quart's own `send_file` reads 8 KiB per thread hop (about 18 MiB/s on a 1 GiB file) and
answers a suffix range with a 500 (BASELINES.md section 3); these replace it.

Lifetime of a file body: the file is opened only once quart starts sending the body (after
the status line went out) and closed when quart leaves the body's ``async with``: at the
end, on an error, or when the client disconnects (quart-trio then cancels the sender).
Each chunk is one ``os.pread`` in a worker thread; it is not abandoned on cancel, so the
descriptor is never closed under a running read.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from stat import S_ISREG
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import quote

import trio
from quart.wrappers.response import Response, ResponseBody

from runtime.errors import FlowError
from runtime.http.ranges import Selection, content_range, http_date, select

if TYPE_CHECKING:
    from werkzeug.datastructures import Headers

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "FileChanged",
    "content_disposition",
    "serve_bytes",
    "serve_file",
]

DEFAULT_CHUNK_SIZE = 1024 * 1024

OnComplete = Callable[[], Awaitable[object]]


class FileChanged(FlowError):
    """A served file's size is not what the caller (or the first stat) said it is."""

    def __init__(self, path: Path, expected: int, actual: int) -> None:
        super().__init__(f"{str(path)!r} is {actual} bytes, expected {expected}")
        self.path = path
        self.expected = expected
        self.actual = actual


async def serve_file(
    path: str | os.PathLike[str],
    *,
    etag: str,
    content_type: str = "application/octet-stream",
    filename: str | None = None,
    request_headers: Mapping[str, str] | None = None,
    method: str | None = None,
    expected_size: int | None = None,
    last_modified: bool = False,
    cache_control: str | None = None,
    on_complete: OnComplete | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Response:
    """Answer a GET or HEAD for the file at `path`, whose strong validator is `etag` (unquoted).

    Handles HEAD, ``Range`` (one range: 206, or 416 past the end; several: the full 200),
    ``If-None-Match``/``If-Modified-Since`` (304), ``If-Match``/``If-Unmodified-Since``
    (412) and ``If-Range``. Last-Modified (and the date forms) only with `last_modified`.
    `request_headers` and `method` default to quart's current request. With
    `expected_size` (the size the catalog recorded) a file of another size raises
    `FileChanged` before any byte is sent. `on_complete` is awaited once the last byte of
    a 200/206 body was handed to the server (not for HEAD, 304, 416, or a disconnect).

    Error handling: a missing file, or a path that is not a regular file, raises
    `FileNotFoundError` (the caller answers 404).
    """
    _check_etag(etag)
    path = Path(path)
    headers, method = _request_parts(request_headers, method)
    stat = await trio.to_thread.run_sync(os.stat, path)
    if not S_ISREG(stat.st_mode):
        # Found out now, not after a 200 went out with a body that cannot be read.
        raise FileNotFoundError(errno.ENOENT, "not a regular file", str(path))
    if expected_size is not None and stat.st_size != expected_size:
        raise FileChanged(path, expected_size, stat.st_size)
    mtime = stat.st_mtime if last_modified else None
    selection = select(headers, size=stat.st_size, etag=etag, last_modified=mtime)
    body: ResponseBody | None = None
    if method != "HEAD" and selection.status in (200, 206):
        body = _FileBody(path, selection.start, selection.stop, stat.st_size,
                         chunk_size=chunk_size, on_complete=on_complete)
    return file_response(selection, body, size=stat.st_size, etag=etag, content_type=content_type,
                     filename=filename, last_modified=mtime, cache_control=cache_control)


async def serve_bytes(
    data: bytes,
    *,
    etag: str | None = None,
    content_type: str = "application/octet-stream",
    filename: str | None = None,
    request_headers: Mapping[str, str] | None = None,
    method: str | None = None,
    last_modified: float | None = None,
    cache_control: str | None = None,
) -> Response:
    """Answer a GET or HEAD with a small in-memory body, with `serve_file`'s semantics.

    `etag` defaults to the SHA-256 (hex) of `data`; `last_modified` is a POSIX timestamp.
    """
    headers, method = _request_parts(request_headers, method)
    if etag is None:
        etag = hashlib.sha256(data).hexdigest()
    _check_etag(etag)
    selection = select(headers, size=len(data), etag=etag, last_modified=last_modified)
    body: ResponseBody | None = None
    if method != "HEAD" and selection.length > 0:
        body = _BytesBody(data[selection.start:selection.stop])
    return file_response(selection, body, size=len(data), etag=etag, content_type=content_type,
                     filename=filename, last_modified=last_modified, cache_control=cache_control)


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII-safe ``filename`` and the exact UTF-8 ``filename*``."""
    fallback = "".join(
        c if 0x20 <= ord(c) < 0x7F and c not in '"\\%' else "_" for c in filename
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _check_etag(etag: str) -> None:
    # A (non-empty) entity-tag is printable ASCII without '"' (RFC 9110 8.8.3); anything else would
    # corrupt the header or never match.
    if not etag or not all(0x21 <= ord(c) <= 0x7E and c != '"' for c in etag):
        raise ValueError(f"etag must be unquoted printable ASCII, got {etag!r}")


def _request_parts(
    headers: Mapping[str, str] | None, method: str | None
) -> tuple[Mapping[str, str] | Headers, str]:
    if headers is None or method is None:
        from quart import request

        return (request.headers if headers is None else headers,
                (request.method if method is None else method).upper())
    return headers, method.upper()


def file_response(
    selection: Selection,
    body: ResponseBody | None,
    *,
    size: int,
    etag: str,
    content_type: str,
    filename: str | None,
    last_modified: float | None,
    cache_control: str | None,
) -> Response:
    """The answer to a file request for `selection`: its headers, and `body` (None: no body, e.g. HEAD)."""
    status = selection.status
    response = Response(body if body is not None else _BytesBody(b""), status=status)
    # A 1 GiB download to a slow client takes minutes; quart's RESPONSE_TIMEOUT (60 s by
    # default) would silently cut it short, so the body has no deadline of its own.
    response.timeout = None
    h = response.headers
    h.clear()
    h["ETag"] = f'"{etag}"'
    if last_modified is not None:
        h["Last-Modified"] = http_date(last_modified)
    if cache_control is not None:
        h["Cache-Control"] = cache_control
    if status in (304, 412):
        return response
    h["Accept-Ranges"] = "bytes"
    if status == 416:
        h["Content-Range"] = f"bytes */{size}"
        h["Content-Length"] = "0"
        return response
    h["Content-Type"] = content_type
    h["Content-Length"] = str(selection.length)
    if status == 206:
        h["Content-Range"] = content_range(selection.start, selection.stop, size)
    if filename is not None:
        h["Content-Disposition"] = content_disposition(filename)
    return response


class _BytesBody(ResponseBody):
    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    async def __aenter__(self) -> _BytesBody:
        return self

    async def __aexit__(
        self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def __aiter__(self) -> _BytesBody:
        return self

    async def __anext__(self) -> bytes:
        data, self._data = self._data, None
        if not data:
            raise StopAsyncIteration
        return data


class _FileBody(ResponseBody):
    """Bytes ``[start, stop)`` of one file, one ``pread`` per chunk, no seek or tell."""

    def __init__(
        self,
        path: Path,
        start: int,
        stop: int,
        size: int,
        *,
        chunk_size: int,
        on_complete: OnComplete | None,
    ) -> None:
        self._path = path
        self._offset = start
        self._stop = stop
        self._size = size
        self._chunk_size = chunk_size
        self._on_complete = on_complete
        self._fd: int | None = None

    async def __aenter__(self) -> _FileBody:
        if self._offset >= self._stop:
            return self  # an empty file: nothing to open
        self._fd = await trio.to_thread.run_sync(_open_for_streaming, self._path, self._size)
        return self

    async def __aexit__(
        self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Closing a regular file's descriptor does not block, and must happen even when
        # this task is being cancelled, so no thread hop and no checkpoint here.
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __aiter__(self) -> _FileBody:
        return self

    async def __anext__(self) -> bytes:
        if self._offset >= self._stop:
            # quart asks for the next chunk only once the last one was sent.
            if self._on_complete is not None:
                on_complete, self._on_complete = self._on_complete, None
                await on_complete()
            raise StopAsyncIteration
        if self._fd is None:
            raise RuntimeError("_FileBody iterated outside its async with")
        want = min(self._chunk_size, self._stop - self._offset)
        data = await trio.to_thread.run_sync(os.pread, self._fd, want, self._offset)
        if not data:
            raise FileChanged(self._path, self._size, self._offset)
        self._offset += len(data)
        return data


def _open_for_streaming(path: Path, size: int) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        actual = os.fstat(fd).st_size
        if actual != size:
            raise FileChanged(path, size, actual)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    except BaseException:
        os.close(fd)
        raise
    return fd
