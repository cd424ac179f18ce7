"""What the hub's request handlers share: the data dir, a thread limiter, settings, a verifier."""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trio

from hub_store import DEFAULT_RESERVE_BYTES, BlobCorrupt, BlobNotFound, HubData, disk_free_bytes

T = TypeVar("T")

DEFAULT_MAX_PUBLISH_BYTES = 64 * 1024**3
DEFAULT_UPLOAD_IDLE_TIMEOUT = 60.0
# bench/hub.py on the 2-core VM: 1 MiB chunks 1463 MiB/s, 4 MiB 1819, 8 MiB 1707 (0.69 -> 0.55
# server CPU s/GiB). Each streaming download holds about one chunk in memory.
DEFAULT_DOWNLOAD_CHUNK = 4 << 20
# How long a presigned download URL of an S3 store stays valid (a client that needs longer
# resumes with a fresh one from the hub).
DEFAULT_BLOB_URL_TTL = 300.0


@dataclass(frozen=True)
class HubSettings:
    """How a hub runs (from flags, env vars or the config file)."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 5000
    max_publish_bytes: int = DEFAULT_MAX_PUBLISH_BYTES
    upload_idle_timeout: float = DEFAULT_UPLOAD_IDLE_TIMEOUT
    trusted_keys: tuple[Any, ...] = ()
    require_signature: bool = False
    private: bool = False
    verify_on_serve: bool = True
    download_chunk_bytes: int = DEFAULT_DOWNLOAD_CHUNK
    threads: int = 8
    # A publish must leave this much free on the data dir's disk (507 otherwise).
    disk_reserve_bytes: int = DEFAULT_RESERVE_BYTES
    free_space: Callable[[Path], int] = disk_free_bytes  # a seam for tests
    # Where blobs live: None or file:///DIR (local files, by default in data_dir), or
    # s3://bucket/prefix (runtime/hub/s3blobs.py; downloads are presigned redirects).
    blobs: str | None = None
    blob_url_ttl: float = DEFAULT_BLOB_URL_TTL


@dataclass
class HubState:
    """The hub's shared state; built once by the composition root (`serve_hub`)."""

    data: HubData
    settings: HubSettings
    admin_key_hash: str
    limiter: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(8))
    verifier: BlobVerifier = field(init=False)
    zip_locks: dict[tuple[str, str], trio.Lock] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.verifier = BlobVerifier(self)

    def zip_lock(self, service_id: str, version: str) -> trio.Lock:
        """One lock per version, so concurrent first requests for its .zip build it once."""
        return self.zip_locks.setdefault((service_id, version), trio.Lock())

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking work (SQLite, hashing, file copies) in a worker thread."""
        return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=self.limiter)


class BlobVerifier:
    """Checks a blob's bytes against its digest before it is first served by this process.

    The result is remembered per (inode, mtime, size), so a blob is hashed once, not on
    every request; concurrent first requests share one check. A corrupt blob is moved
    to quarantine/ and reported as BlobCorrupt.
    """

    def __init__(self, state: HubState, *, max_entries: int = 100_000):
        self._state = state
        self._ok: OrderedDict[str, tuple[int, int, int]] = OrderedDict()
        self._inflight: dict[str, trio.Event] = {}
        self._max = max_entries

    async def ensure(self, digest: str) -> os.stat_result:
        """Stat the blob and make sure its bytes were verified; BlobNotFound / BlobCorrupt otherwise."""
        store = self._state.data.store
        while True:
            try:
                st = await trio.to_thread.run_sync(os.stat, store.path(digest))
            except FileNotFoundError:
                raise BlobNotFound(digest) from None
            if not self._state.settings.verify_on_serve:
                return st
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self._ok.get(digest) == key:
                return st
            pending = self._inflight.get(digest)
            if pending is None:
                break
            await pending.wait()
        done = self._inflight[digest] = trio.Event()
        try:
            actual = await self._state.run(store.hash_file, digest)
            if actual != digest:
                await self._state.run(store.quarantine, digest)
                raise BlobCorrupt(digest, actual)
            self._ok[digest] = key
            self._ok.move_to_end(digest)
            while len(self._ok) > self._max:
                self._ok.popitem(last=False)
            return st
        finally:
            del self._inflight[digest]
            done.set()

    def verified(self, digest: str, st: os.stat_result) -> bool:
        """Whether the file `st` describes is the one this process has already checked."""
        if not self._state.settings.verify_on_serve:
            return True
        return self._ok.get(digest) == (st.st_ino, st.st_mtime_ns, st.st_size)

    def forget(self, digest: str) -> None:
        """Drop a remembered result (after the blob was deleted or replaced)."""
        self._ok.pop(digest, None)


def blob_path(state: HubState, digest: str) -> Path:
    """The file of a blob in the local store."""
    return state.data.store.path(digest)
