"""The few hub endpoints the node reads: a version's manifest, its signature, blob URLs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import httpx

from runtime.node.errors import HubRequestFailed

MANIFEST_LIMIT = 64 << 20
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0


def new_client(hub_url: str, *, connect_timeout: float = CONNECT_TIMEOUT,
               read_timeout: float = READ_TIMEOUT) -> httpx.AsyncClient:
    """An AsyncClient suited to the hub: bounded waits, no redirects.

    For a plain http:// hub no TLS context is built: loading the CA bundle costs
    0.15-0.6 s here, a third of an incremental install.
    """
    tls: dict[str, bool] = {"verify": False} if hub_url.startswith("http://") else {}
    timeout = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout,
                            pool=None)
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=8)
    return httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False, **tls)


@dataclass(frozen=True)
class ManifestResponse:
    """A version's canonical service.json as served, with the version the hub resolved."""

    raw: bytes
    version: str | None


class HubClient:
    """Reads manifests and signatures from one hub; the caller owns `client`."""

    def __init__(self, base_url: str, client: httpx.AsyncClient):
        self.base_url = base_url.rstrip("/")
        self.client = client

    def blob_url(self, digest: str) -> str:
        """The URL of blob `digest` (bare hex)."""
        return f"{self.base_url}/blobs/sha256:{digest}"

    async def _get(self, url: str) -> httpx.Response:
        try:
            return await self.client.get(url)
        except httpx.HTTPError as exc:
            raise HubRequestFailed(url, f"{type(exc).__name__}: {exc}" if str(exc)
                                   else type(exc).__name__) from None

    async def fetch_manifest(self, service: str, version: str) -> ManifestResponse:
        """GET the manifest; its ETag (when sent) must be the sha256 of the body."""
        url = f"{self.base_url}/api/services/{service}/{version}/manifest"
        resp = await self._get(url)
        if resp.status_code == 404:
            raise HubRequestFailed(url, f"{service}@{version} is not on the hub (404)")
        if resp.status_code != 200:
            raise HubRequestFailed(url, f"unexpected HTTP {resp.status_code}")
        raw = resp.content
        if len(raw) > MANIFEST_LIMIT:
            raise HubRequestFailed(url, f"manifest is larger than {MANIFEST_LIMIT} bytes")
        etag = resp.headers.get("etag", "").strip().removeprefix("W/").strip('"')
        if etag and etag != hashlib.sha256(raw).hexdigest():
            raise HubRequestFailed(url, f"manifest body does not match its ETag {etag!r}")
        return ManifestResponse(raw, resp.headers.get("x-flowctl-version"))

    async def fetch_signature(self, service: str, version: str) -> bytes | None:
        """The raw signature bytes, or None when the version is unsigned (404)."""
        url = f"{self.base_url}/api/services/{service}/{version}/signature"
        resp = await self._get(url)
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise HubRequestFailed(url, f"unexpected HTTP {resp.status_code}")
        return resp.content
