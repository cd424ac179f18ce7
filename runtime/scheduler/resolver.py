"""How the scheduler learns a version's manifest (resources, models) and what a channel points at:
from the hub, over HTTP.

Over HTTP even when the hub runs in the same process, so the scheduler role can
run apart from the hub role with no other change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from packer.errors import PackerError
from packer.manifest import Manifest, parse_bundle_manifest
from packer.semver import is_version, parse_version
from runtime.scheduler.service import DeployError, UnknownService

RESOLVE_TIMEOUT = 30.0


def hub_manifest_resolver(hub_url: str | Callable[[], str], *,
                          token: str | None = None) -> Callable[[str, str], Awaitable[Manifest]]:
    """A resolver reading `GET /api/services/{id}/{version}/manifest` from the hub at `hub_url`.

    `hub_url` may be a function, for a hub whose port is known only once it is bound.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def resolve(service_id: str, version: str) -> Manifest:
        base = (hub_url() if callable(hub_url) else hub_url).rstrip("/")
        url = f"{base}/api/services/{service_id}/{version}/manifest"
        try:
            async with httpx.AsyncClient(timeout=RESOLVE_TIMEOUT, headers=headers) as client:
                response = await client.get(url)
        except httpx.TransportError as exc:
            raise DeployError(f"hub at {base} is unreachable: {type(exc).__name__}") from None
        if response.status_code == 404:
            raise UnknownService(f"the hub has no {service_id}@{version} (publish it first)")
        if response.status_code != 200:
            raise DeployError(f"hub answered HTTP {response.status_code} for {service_id}@{version}")
        try:
            return parse_bundle_manifest(response.content)
        except PackerError as exc:
            raise DeployError(f"hub sent a bad manifest for {service_id}@{version}: {exc}") from None

    return resolve


def hub_channel_resolver(hub_url: str | Callable[[], str], *,
                         token: str | None = None) -> Callable[[str, str], Awaitable[str | None]]:
    """A lookup of the version a channel points at, from `GET /api/services/{id}` on the hub.

    `stable`: the highest stable, non-yanked version (the hub's `latest_version`);
    `latest`: the highest non-yanked version, pre-releases and unstable ones included.
    None when the service has no such version. Raises DeployError when the hub cannot say.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def lookup(service_id: str, track: str) -> str | None:
        base = (hub_url() if callable(hub_url) else hub_url).rstrip("/")
        try:
            async with httpx.AsyncClient(timeout=RESOLVE_TIMEOUT, headers=headers) as client:
                response = await client.get(f"{base}/api/services/{service_id}")
        except httpx.TransportError as exc:
            raise DeployError(f"hub at {base} is unreachable: {type(exc).__name__}") from None
        if response.status_code == 404:
            raise UnknownService(f"the hub has no service {service_id!r} (publish it first)")
        if response.status_code != 200:
            raise DeployError(f"hub answered HTTP {response.status_code} for service {service_id}")
        try:
            body = response.json()
            if track == "stable":
                latest = body.get("latest_version")
                return latest if isinstance(latest, str) and is_version(latest) else None
            found = [v["version"] for v in body.get("versions", [])
                     if not v.get("yanked") and isinstance(v.get("version"), str) and is_version(v["version"])]
        except (ValueError, TypeError, KeyError, AttributeError):
            raise DeployError(f"hub sent a malformed listing for service {service_id}") from None
        return max(found, key=parse_version, default=None)

    return lookup
