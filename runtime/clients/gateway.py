"""A client for the gateway's admin API (what `flowctl tenants/keys/usage` call)."""

from __future__ import annotations

from typing import Any

from runtime.clients._base import PlaneClient

PREFIX = "/api/gateway"


class GatewayAdminClient(PlaneClient):
    """Tenants, keys and usage of one control plane; `async with GatewayAdminClient(url, token=...)`.

    Error handling: every failure is a PlaneError (`status` None when unreachable).
    """

    async def create_tenant(self, name: str, **limits: int | None) -> dict[str, Any]:
        """A new tenant, with optional tenant-wide rpm/tpm/max_concurrency/max_sessions."""
        return await self._json("POST", f"{PREFIX}/tenants", json={"name": name, **limits})

    async def update_tenant(self, name: str, **limits: int | None) -> dict[str, Any]:
        """Change the given limits of a tenant (None: unlimited); the others stay."""
        return await self._json("PATCH", f"{PREFIX}/tenants/{name}", json=limits)

    async def tenants(self) -> list[dict[str, Any]]:
        """Every tenant."""
        return await self._json("GET", f"{PREFIX}/tenants")

    async def delete_tenant(self, name: str) -> None:
        """Remove a tenant (its keys are revoked)."""
        await self._json("DELETE", f"{PREFIX}/tenants/{name}")

    async def create_key(self, tenant: str, **options: Any) -> dict[str, Any]:
        """A new key: the reply holds the key itself, shown this once."""
        return await self._json("POST", f"{PREFIX}/keys", json={"tenant": tenant, **options})

    async def keys(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Every key (never a secret), or a tenant's."""
        return await self._json("GET", f"{PREFIX}/keys", params={"tenant": tenant} if tenant else None)

    async def revoke(self, key_id: str) -> None:
        """Revoke a key: it stops working at once."""
        await self._json("DELETE", f"{PREFIX}/keys/{key_id}")

    async def usage(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Usage per day, tenant, key, model and via (http, session, job)."""
        return await self._json("GET", f"{PREFIX}/usage", params={"tenant": tenant} if tenant else None)
