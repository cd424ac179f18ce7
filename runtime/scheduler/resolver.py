"""How the scheduler learns a version's manifest (resources, models): from the hub, over HTTP.

Over HTTP even when the hub runs in the same process, so the scheduler role can
run apart from the hub role with no other change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from packer.errors import PackerError
from packer.manifest import Manifest, parse_bundle_manifest
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
