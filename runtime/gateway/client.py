"""A client for the gateway's admin API (what `flowctl tenants/keys/usage` call)."""

from __future__ import annotations

from typing import Any

import httpx

from runtime.scheduler.client import PlaneError


class GatewayAdminClient:
    """Tenants, keys and usage of one control plane; `async with GatewayAdminClient(url, token=...)`."""

    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)

    async def __aenter__(self) -> GatewayAdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, "/api/gateway" + path, **kwargs)
        except httpx.TransportError as exc:
            raise PlaneError(f"control plane {self.base_url!r} is unreachable: "
                             f"{str(exc) or type(exc).__name__}") from None
        if response.status_code >= 400:
            try:
                detail = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                detail = response.text.strip()[:200] or response.reason_phrase
            raise PlaneError(f"{detail} (HTTP {response.status_code})", status=response.status_code)
        return response.json() if response.content else None

    async def create_tenant(self, name: str, **limits: int | None) -> dict[str, Any]:
        """A new tenant, with optional tenant-wide rpm/tpm/max_concurrency."""
        return await self._call("POST", "/tenants", json={"name": name, **limits})

    async def tenants(self) -> list[dict[str, Any]]:
        """Every tenant."""
        return await self._call("GET", "/tenants")

    async def delete_tenant(self, name: str) -> None:
        """Remove a tenant (its keys are revoked)."""
        await self._call("DELETE", f"/tenants/{name}")

    async def create_key(self, tenant: str, **options: Any) -> dict[str, Any]:
        """A new key: the reply holds the key itself, shown this once."""
        return await self._call("POST", "/keys", json={"tenant": tenant, **options})

    async def keys(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Every key (never a secret), or a tenant's."""
        return await self._call("GET", "/keys", params={"tenant": tenant} if tenant else None)

    async def revoke(self, key_id: str) -> None:
        """Revoke a key: it stops working at once."""
        await self._call("DELETE", f"/keys/{key_id}")

    async def usage(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Usage per day, tenant, key and model."""
        return await self._call("GET", "/usage", params={"tenant": tenant} if tenant else None)
