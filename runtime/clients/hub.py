"""A client for the hub's HTTP API: listing, publishing (streamed), flags, GC, resumable pulls,
and the few endpoints a node installs from (a version's manifest, its signature, blob URLs)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from hub_store import ids
from runtime.clients._base import READ_TIMEOUT, ApiClient, error_detail
from runtime.clients.errors import HubRequestFailed, HubUnreachable, PullFailed
from runtime.clients.redirects import REFUSED, get_following, store_client
from runtime.clients.store_errors import store_refusal

CHUNK = 1 << 20
MANIFEST_LIMIT = 64 << 20
Progress = Callable[[int], None]


@dataclass(frozen=True)
class PullResult:
    """A pulled bundle: where it is, what it is, and how many bytes were already there."""

    path: Path
    service_id: str
    version: str
    sha256: str
    size: int
    resumed_from: int
    already_complete: bool = False


@dataclass(frozen=True)
class ManifestResponse:
    """A version's canonical service.json as served, with its URL and the version the hub resolved."""

    url: str
    raw: bytes
    version: str | None


class HubClient(ApiClient):
    """Talks to one hub; use as `async with HubClient(url, token=...) as hub:`.

    Error handling: HubUnreachable when the hub does not answer, HubRequestFailed
    when it answers with an error status or an unusable body (both HubError).
    """

    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = READ_TIMEOUT,
                 transport: httpx.AsyncBaseTransport | None = None):
        # Reads may stall while the hub hashes a large blob once; connect fast, read patiently.
        super().__init__(base_url, token=token, timeout=timeout, transport=transport)
        self._store: httpx.AsyncClient | None = None
        self._timeout = timeout

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._store is not None:
                await self._store.aclose()
        finally:
            await super().__aexit__(*exc)

    @property
    def http(self) -> httpx.AsyncClient:
        """The connection pool, for downloads the caller streams itself (the node's blob fetches)."""
        return self._http

    @property
    def store_http(self) -> httpx.AsyncClient:
        """The pool for the hub's redirects to its blob store: no Authorization, TLS verified."""
        if self._store is None:
            self._store = store_client(timeout=self._timeout)
        return self._store

    def _unreachable(self, reason: str) -> HubUnreachable:
        return HubUnreachable(self.base_url, reason)

    def _refused(self, method: str, response: httpx.Response) -> HubRequestFailed:
        return HubRequestFailed(method, str(response.url), response.status_code, error_detail(response))

    def blob_url(self, digest: str) -> str:
        """The URL of blob `digest` (bare hex)."""
        return self.url(f"/blobs/sha256:{digest}")

    async def services(self) -> list[dict[str, Any]]:
        """`GET /api/services`."""
        return (await self._request("GET", "/api/services")).json()

    async def version(self, service_id: str, ref: str = ids.LATEST) -> dict[str, Any]:
        """One version with its files (`latest` resolved by the hub)."""
        return (await self._request("GET", f"/api/services/{service_id}/{ref}")).json()

    async def service(self, service_id: str) -> dict[str, Any]:
        """`GET /api/services/{id}`."""
        return (await self._request("GET", f"/api/services/{service_id}")).json()

    async def checksum(self, service_id: str, ref: str = ids.LATEST) -> dict[str, Any]:
        """`GET /api/services/{id}/{version}/checksum`."""
        return (await self._request("GET", f"/api/services/{service_id}/{ref}/checksum")).json()

    async def fetch_manifest(self, service: str, version: str) -> ManifestResponse:
        """GET a version's manifest; its ETag (when sent) must be the sha256 of the body."""
        path = f"/api/services/{service}/{version}/manifest"
        try:
            resp = await self._request("GET", path)
        except HubRequestFailed as exc:
            if exc.status != 404:
                raise
            raise HubRequestFailed("GET", exc.url, 404, f"{service}@{version} is not on the hub") from None
        url = self.url(path)
        if resp.status_code != 200:
            raise HubRequestFailed("GET", url, resp.status_code, "expected 200 and the manifest")
        raw = resp.content
        if len(raw) > MANIFEST_LIMIT:
            raise HubRequestFailed("GET", url, 200, f"manifest is larger than {MANIFEST_LIMIT} bytes")
        etag = resp.headers.get("etag", "").strip().removeprefix("W/").strip('"')
        if etag and etag != hashlib.sha256(raw).hexdigest():
            raise HubRequestFailed("GET", url, 200, f"manifest body does not match its ETag {etag!r}")
        return ManifestResponse(url, raw, resp.headers.get("x-flowctl-version"))

    async def fetch_signature(self, service: str, version: str) -> bytes | None:
        """The raw signature bytes, or None when the version is unsigned (404)."""
        try:
            resp = await self._request("GET", f"/api/services/{service}/{version}/signature")
        except HubRequestFailed as exc:
            if exc.status == 404:
                return None
            raise
        return resp.content

    async def ranking(self, limit: int = 10) -> list[dict[str, Any]]:
        """`GET /api/model-usage/ranking`."""
        return (await self._request("GET", "/api/model-usage/ranking", params={"limit": limit})).json()

    async def set_flag(self, service_id: str, version: str, action: str) -> dict[str, Any]:
        """Mark a version: action is stable, unstable, yank or unyank."""
        return (await self._request("POST", f"/api/services/{service_id}/{version}/{action}")).json()

    async def gc(self, *, dry_run: bool = False) -> dict[str, Any]:
        """Run GC on the hub."""
        return (await self._request("POST", "/api/admin/gc", params={"dry_run": str(dry_run).lower()},
                                    timeout=None)).json()

    async def fsck(self, *, quarantine: bool = False) -> dict[str, Any]:
        """Run fsck on the hub (hashes every blob; may take a while)."""
        return (await self._request("POST", "/api/admin/fsck",
                                    params={"quarantine": str(quarantine).lower()}, timeout=None)).json()

    async def publish(self, bundle: Path, *, stable: bool | None = None,
                      progress: Progress | None = None) -> dict[str, Any]:
        """Upload a bundle (streamed, with its SHA-256 announced); idempotent for identical bytes."""
        service_id, version, digest, size = await trio.to_thread.run_sync(_describe, Path(bundle))
        try:
            existing = await self.checksum(service_id, version)
        except HubRequestFailed as exc:
            if exc.status != 404:
                raise
            existing = None
        params = {} if stable is None else {"stable": str(stable).lower()}
        headers = {"X-Flowctl-Sha256": digest, "Content-Type": "application/octet-stream"}
        path = f"/api/services/{service_id}/{version}"
        if existing is not None and bundle_digest(existing)[0] == digest:
            # Not uploaded again, but still a PUT: the hub checks the key before it answers
            # from the announced digest alone, so a wrong key is refused, not told "published".
            response = await self._request("PUT", path, params=params, content=b"",
                                           headers={**headers, "Content-Length": "0"})
            return {**existing, **response.json(), "created": False}
        response = await self._request("PUT", path, params=params,
                                       headers={**headers, "Content-Length": str(size)},
                                       content=_file_chunks(Path(bundle), progress),
                                       timeout=httpx.Timeout(None, connect=10.0))
        return response.json()

    async def pull(self, service_id: str, ref: str, out_dir: Path, *,
                   progress: Progress | None = None) -> PullResult:
        """Download a bundle into out_dir, resuming a previous partial download, then verify it.

        The partial file is `NAME.fbundle.part`; it is continued with `Range` + `If-Range`
        (the bundle's SHA-256), so a changed file on the hub restarts from zero.
        Error handling: a digest mismatch removes the partial file and raises PullFailed.
        """
        info = await self.checksum(ids.service_id(service_id), ids.version_ref(ref))
        version = ids.version(info["version"])
        digest, size = bundle_digest(info)
        out_dir = Path(out_dir)
        final = out_dir / f"{service_id}-{version}.fbundle"
        part = final.with_name(final.name + ".part")
        await trio.to_thread.run_sync(lambda: out_dir.mkdir(parents=True, exist_ok=True))
        if await trio.to_thread.run_sync(_matches, final, digest):
            return PullResult(final, service_id, version, digest, size, size, already_complete=True)
        have, hasher = await trio.to_thread.run_sync(_hash_partial, part, size)
        if progress is not None and have:
            progress(have)
        resumed_from = have
        headers = {"Range": f"bytes={have}-", "If-Range": f'"{digest}"'} if have else {}
        # A store's ETag is not the digest, and its keys never change: Range alone there.
        store_headers = {"Range": headers["Range"]} if have else {}
        url = self.url(f"/storage/services/{service_id}/{version}.fbundle")
        limit = httpx.Timeout(60.0, connect=10.0)
        try:
            for ask in range(2):  # a presigned URL that expired is asked for once more
                response, redirected = await get_following(self._http, self.store_http, url, headers,
                                                           store_headers=store_headers, http_timeout=limit)
                try:
                    if redirected and response.status_code in REFUSED and ask == 0:
                        continue
                    if response.status_code == 200 and have:
                        resumed_from, hasher = 0, hashlib.sha256()  # all of it was sent: start over
                    elif response.status_code not in (200, 206):
                        await response.aread()
                        if redirected:  # the store's URL is signed: name the hub's
                            raise HubRequestFailed("GET", url, response.status_code, store_refusal(response.status_code, response.text))
                        raise self._refused("GET", response)
                    await self._receive(response, part, hasher, resumed_from, progress)
                    break
                finally:
                    await response.aclose()
        except httpx.TransportError as exc:
            raise HubUnreachable(self.base_url, f"download interrupted ({exc or type(exc).__name__}); "
                                 "run the same pull again to resume") from None
        except httpx.TooManyRedirects as exc:
            raise HubRequestFailed("GET", url, 307, str(exc)) from None
        actual = hasher.hexdigest()
        if actual != digest:
            await trio.to_thread.run_sync(lambda: part.unlink(missing_ok=True))
            raise PullFailed(f"{final.name}: sha256 mismatch (expected {digest}, got {actual}); "
                             "the partial download was removed, pull again")
        await trio.to_thread.run_sync(os.replace, part, final)
        return PullResult(final, service_id, version, digest, size, resumed_from)

    @staticmethod
    async def _receive(response: httpx.Response, part: Path, hasher: Any, resumed_from: int,
                       progress: Progress | None) -> None:
        """Append (or write anew) the body to the partial file, hashing it, then fsync."""
        mode = "ab" if resumed_from else "wb"
        f = await trio.to_thread.run_sync(open, part, mode)
        try:
            async for chunk in _rechunk(response.aiter_raw()):
                await trio.to_thread.run_sync(_write_hashed, f, hasher, chunk)
                if progress is not None:
                    progress(len(chunk))
            await trio.to_thread.run_sync(_sync, f)
        finally:
            await trio.to_thread.run_sync(f.close)


def bundle_digest(info: dict[str, Any]) -> tuple[str, int]:
    """(sha256, size) of the .fbundle from a checksum, list or detail body.

    `sha256`/`size_bytes` describe the seed's .zip on hubs that serve it that way; the
    bundle's own are `bundle_sha256`/`bundle_size_bytes` (older hubs sent only the former).
    """
    digest = info.get("bundle_sha256", info.get("sha256"))
    size = info.get("bundle_size_bytes", info.get("size_bytes"))
    if not isinstance(digest, str) or not isinstance(size, int):
        raise HubRequestFailed("GET", "checksum", 200, "the hub's answer has no bundle digest and size")
    return ids.hex_digest(digest), size


def _describe(bundle: Path) -> tuple[str, str, str, int]:
    from packer import open_bundle, sha256_file

    with open(bundle, "rb") as f, open_bundle(f, source=str(bundle)) as reader:
        manifest = reader.manifest
    return manifest.service_id, manifest.version, sha256_file(bundle), bundle.stat().st_size


async def _file_chunks(path: Path, progress: Progress | None) -> AsyncIterator[bytes]:
    f = await trio.to_thread.run_sync(open, path, "rb")
    try:
        while chunk := await trio.to_thread.run_sync(f.read, CHUNK):
            yield chunk
            if progress is not None:
                progress(len(chunk))
    finally:
        f.close()


async def _rechunk(chunks: AsyncIterator[bytes], size: int = CHUNK) -> AsyncIterator[bytes]:
    """Group small network reads into ~1 MiB writes (one thread hop each)."""
    buf: list[bytes] = []
    n = 0
    async for chunk in chunks:
        buf.append(chunk)
        n += len(chunk)
        if n >= size:
            yield b"".join(buf)
            buf, n = [], 0
    if buf:
        yield b"".join(buf)


def _matches(path: Path, digest: str) -> bool:
    if not path.is_file():
        return False
    from packer import sha256_file

    return sha256_file(path) == digest


def _hash_partial(part: Path, size: int) -> tuple[int, Any]:
    hasher = hashlib.sha256()
    try:
        have = part.stat().st_size
    except FileNotFoundError:
        return 0, hasher
    if have >= size:  # cannot be a prefix of the file: start again
        part.unlink()
        return 0, hasher
    with open(part, "rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
    return have, hasher


def _write_hashed(f: Any, hasher: Any, chunk: bytes) -> None:
    f.write(chunk)
    f.flush()
    hasher.update(chunk)


def _sync(f: Any) -> None:
    f.flush()
    os.fsync(f.fileno())
