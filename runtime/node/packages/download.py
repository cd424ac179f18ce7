"""Fetch one blob into the local store: resumable, bounded, stall-aware, verified.

A blob is streamed into `downloads/{hex}.partial`, hashed as it is written, and
enters the store (fsynced, renamed) only once its SHA-256 matches. A partial
left by an earlier run is re-hashed and continued with `Range: bytes=N-` and
`If-Range` on the ETag first seen; a 200 where a 206 was asked, a 206 for
another offset, or a changed ETag truncates the partial and starts over (bytes
of two different representations are never appended). Nothing beyond the
manifest's size is ever written. A transfer that stays below `min_rate` bytes
per second for `stall_window` seconds is aborted and retried with backoff.

A hub whose blobs are in an S3-compatible store answers with a redirect to a presigned URL:
it is followed on `store_client` (runtime/clients/redirects.py: never with the hub's
Authorization), with the same Range and checks; a URL the store refuses as expired (403) is
asked for afresh from the hub at once.

Cancellation: the partial and its hash state stay consistent (a thread write
always completes), so a cancelled or killed download resumes next time.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from runtime.clients.errors import HubRequestFailed
from runtime.clients.redirects import REFUSED, get_following
from runtime.clients.redirects import store_client as new_store_client
from runtime.node.packages.errors import BlobMismatch, DownloadFailed, TransferStalled
from runtime.node.packages.fsutil import start_writeback

CHUNK = 1 << 20
WRITE_QUEUE = 2
WRITE_BATCH = 4 << 20
FLUSH_EVERY = 0.5
WRITEBACK_EVERY = 32 << 20
STALL_WINDOW = 30.0
MIN_RATE = 1024
ATTEMPTS = 6
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")

Progress = Callable[[int], None]


@dataclass(frozen=True)
class FetchPolicy:
    """Retry and stall parameters; tests shrink them."""

    stall_window: float = STALL_WINDOW
    min_rate: float = MIN_RATE
    attempts: int = ATTEMPTS
    backoff_initial: float = BACKOFF_INITIAL
    backoff_max: float = BACKOFF_MAX


@dataclass(frozen=True)
class FetchResult:
    """What fetching one blob cost: bytes received now, bytes reused from a partial."""

    downloaded: int
    resumed: int


class _Retry(Exception):
    """One attempt failed in a way worth another try."""


class _Partial:
    """The `.partial` file of one blob, its length and the hash of what it holds (blocking)."""

    def __init__(self, path: Path, size: int):
        self.path = path
        self.size = size
        self.etag_path = path.with_name(path.name + ".etag")
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        self.hash = hashlib.sha256()
        self.offset = 0
        self.received = 0
        self.synced = 0
        self.etag: str | None = None
        self.write_error: OSError | None = None

    def rehash(self) -> int:
        """Hash what an earlier run left; a partial longer than the blob is discarded."""
        length = os.fstat(self.fd).st_size
        if length > self.size:
            self.restart()
            return 0
        os.lseek(self.fd, 0, os.SEEK_SET)
        while self.offset < length:
            data = os.read(self.fd, min(CHUNK, length - self.offset))
            if not data:
                break
            self.hash.update(data)
            self.offset += len(data)
        os.ftruncate(self.fd, self.offset)
        try:
            self.etag = self.etag_path.read_text().strip() or None
        except FileNotFoundError:
            self.etag = None
        return self.offset

    def restart(self) -> None:
        """Drop everything written so far."""
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        self.hash = hashlib.sha256()
        self.offset = self.synced = 0
        self.set_etag(None)

    def set_etag(self, etag: str | None) -> None:
        """Remember the representation the partial's bytes came from."""
        self.etag = etag
        if etag is None:
            self.etag_path.unlink(missing_ok=True)
        else:
            self.etag_path.write_text(etag)

    def store(self, data: bytes) -> None:
        """Write `data` at the current offset (without hashing or advancing)."""
        view = memoryview(data)
        pos = self.offset
        while view:
            n = os.pwrite(self.fd, view, pos)
            view = view[n:]
            pos += n

    def advance(self, n: int) -> None:
        """Count `n` stored and hashed bytes; start their writeback in large steps."""
        self.offset += n
        self.received += n
        if self.offset - self.synced >= WRITEBACK_EVERY:
            start_writeback(self.fd, self.synced, self.offset - self.synced)
            self.synced = self.offset

    def finish(self) -> str:
        """fsync and return the hex digest of the whole partial."""
        os.fsync(self.fd)
        return self.hash.hexdigest()

    def close(self) -> None:
        os.close(self.fd)

    def discard(self) -> None:
        """Remove the partial and its ETag note (after it entered the store)."""
        self.etag_path.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)


async def fetch_blob(
    client: httpx.AsyncClient,
    url: str,
    digest: str,
    size: int,
    partial: Path,
    adopt: Callable[[Path, str], object],
    *,
    policy: FetchPolicy = FetchPolicy(),
    on_progress: Progress | None = None,
    store_client: httpx.AsyncClient | None = None,
) -> FetchResult:
    """Download blob `digest` of `size` bytes from `url`; `adopt(path, digest)` stores it.

    `store_client` follows the hub's redirects to its blob store (one of its own is opened
    when needed and not given). The caller holds the blob's lock. Error handling: a 404
    fails at once (HubRequestFailed); connection errors, stalls, bad statuses and corrupt
    bytes are retried `policy.attempts` times, then DownloadFailed (or BlobMismatch when
    the bytes kept arriving wrong).
    """
    if store_client is None:
        async with new_store_client() as own:
            return await fetch_blob(client, url, digest, size, partial, adopt, policy=policy,
                                    on_progress=on_progress, store_client=own)
    report = on_progress or (lambda n: None)
    part = await trio.to_thread.run_sync(_Partial, partial, size)
    try:
        resumed = await trio.to_thread.run_sync(part.rehash)
        report(resumed)
        delay = policy.backoff_initial
        for attempt in range(1, policy.attempts + 1):
            try:
                if part.offset < size:
                    await _attempt(client, store_client, url, digest, size, part, policy, report)
                if part.offset < size:
                    raise _Retry(f"connection ended at byte {part.offset} of {size}")
                actual = await trio.to_thread.run_sync(part.finish)
                if actual != digest:
                    report(-part.offset)
                    await trio.to_thread.run_sync(part.restart)
                    raise BlobMismatch(digest, actual, size)
                break
            except (_Retry, TransferStalled, BlobMismatch) as exc:
                if attempt == policy.attempts:
                    if isinstance(exc, BlobMismatch):
                        raise
                    raise DownloadFailed(digest, attempt, str(exc)) from None
                if not isinstance(exc, _Restart):
                    await trio.sleep(delay)
                    delay = min(delay * 2, policy.backoff_max)
    finally:
        part.close()
    await trio.to_thread.run_sync(_adopt, part, adopt, digest)
    return FetchResult(downloaded=part.received, resumed=resumed)


def _adopt(part: _Partial, adopt: Callable[[Path, str], object], digest: str) -> None:
    adopt(part.path, digest)
    part.discard()


class _Restart(_Retry):
    """The server's representation changed: start over at once (no backoff)."""


async def _attempt(client: httpx.AsyncClient, store: httpx.AsyncClient, url: str, digest: str, size: int,
                   part: _Partial, policy: FetchPolicy, report: Progress) -> None:
    """One GET from the partial's offset (through the hub's redirect, if any), written as it arrives."""
    headers = {"Accept-Encoding": "identity"}
    ranged = part.offset > 0
    if ranged:
        headers["Range"] = f"bytes={part.offset}-"
        headers["If-Range"] = part.etag or f'"{digest}"'
    # The store's ETag is not the digest: If-Range only with one the store itself sent.
    store_headers = {k: v for k, v in headers.items() if k != "If-Range" or part.etag is not None}
    try:
        with trio.move_on_after(policy.stall_window) as head:
            resp, redirected = await get_following(client, store, url, headers, store_headers=store_headers)
        if head.cancelled_caught:
            raise TransferStalled(digest, 0, policy.stall_window)
        try:
            if redirected and resp.status_code in REFUSED:
                raise _Restart(f"the blob store refused the hub's presigned URL (HTTP {resp.status_code}, "
                               "expired?): asking the hub for a fresh one")
            await _accept(resp, url, size, part, ranged, report)
            await _stream_into(resp, digest, size, part, policy, report)
        finally:
            await resp.aclose()
    except httpx.HTTPError as exc:
        raise _Retry(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None


async def _accept(resp: httpx.Response, url: str, size: int, part: _Partial, ranged: bool,
                  report: Progress) -> None:
    """Decide from the status and headers whether to continue, restart or retry."""
    etag = resp.headers.get("etag")
    status = resp.status_code
    if status == 404:
        raise HubRequestFailed("GET", url, 404, "blob not found on the hub")
    if status == 416:
        report(-part.offset)
        await trio.to_thread.run_sync(part.restart)
        raise _Restart("416: the partial does not fit the blob")
    if status == 206 and ranged:
        match = _CONTENT_RANGE.match(resp.headers.get("content-range", ""))
        changed = part.etag is not None and etag is not None and etag != part.etag
        if match is None or int(match.group(1)) != part.offset or changed or (
                match.group(3) != "*" and int(match.group(3)) != size):
            report(-part.offset)
            await trio.to_thread.run_sync(part.restart)
            raise _Restart("the server's copy changed or it answered another range")
        return
    if status == 200:
        if part.offset:
            # A full body where a range was asked: start over, never append.
            report(-part.offset)
            await trio.to_thread.run_sync(part.restart)
        await trio.to_thread.run_sync(part.set_etag, etag)
        return
    raise _Retry(f"unexpected HTTP {status}")


async def _stream_into(resp: httpx.Response, digest: str, size: int, part: _Partial,
                       policy: FetchPolicy, report: Progress) -> None:
    """Stream the body into the partial through a writer task; stop at `size` bytes.

    Only the reading is under the stall deadline: what did arrive is always written.
    """
    room = size - part.offset
    received = 0
    send, recv = trio.open_memory_channel[list[bytes]](WRITE_QUEUE)

    async def writer() -> None:
        # Hashing (the slow part) and writing run in two threads at once for each batch.
        async with recv:
            async for chunks in recv:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                async with trio.open_nursery() as both:
                    both.start_soon(trio.to_thread.run_sync, part.hash.update, data)
                    try:
                        await trio.to_thread.run_sync(part.store, data)
                    except OSError as exc:  # caught here: a nursery body would group it
                        part.write_error = exc
                if part.write_error is not None:
                    nursery.cancel_scope.cancel()
                    return
                part.advance(len(data))
                report(len(data))

    window_bytes = 0
    need = policy.min_rate * policy.stall_window
    broken: httpx.HTTPError | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        async with send:
            pending: list[bytes] = []
            pending_len = 0
            flushed_at = trio.current_time()
            with trio.CancelScope(deadline=trio.current_time() + policy.stall_window) as stall:
                try:
                    async for chunk in resp.aiter_raw():
                        if len(chunk) > room - received:
                            chunk = chunk[: room - received]  # never write past the declared size
                        received += len(chunk)
                        window_bytes += len(chunk)
                        now = trio.current_time()
                        if window_bytes >= need:
                            window_bytes = 0
                            stall.deadline = now + policy.stall_window
                        pending.append(chunk)
                        pending_len += len(chunk)
                        if pending_len >= WRITE_BATCH or received >= room or now - flushed_at > FLUSH_EVERY:
                            await send.send(pending)
                            pending, pending_len, flushed_at = [], 0, now
                        if received >= room:
                            break
                except httpx.HTTPError as exc:
                    broken = exc
            if pending:
                await send.send(pending)
    if part.write_error is not None:
        raise part.write_error
    if broken is not None:
        raise broken
    if stall.cancelled_caught:
        raise TransferStalled(digest, received, policy.stall_window)
