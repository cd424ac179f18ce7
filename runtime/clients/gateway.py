"""A client for the gateway's admin API (what `flowctl tenants/keys/usage` call)."""

from __future__ import annotations

from typing import Any

from runtime.clients.plane import PlaneClient

PREFIX = "/api/gateway"


class GatewayAdminClient(PlaneClient):
    """Tenants, keys and usage of one control plane; `with GatewayAdminClient(url, token=...)`.

    Error handling: every failure is a PlaneError (`status` None when unreachable).
    """

    def create_tenant(self, name: str, **limits: int | None) -> dict[str, Any]:
        """A new tenant, with optional tenant-wide rpm/tpm/max_concurrency/max_sessions."""
        return self._json("POST", f"{PREFIX}/tenants", json_body={"name": name, **limits})

    def update_tenant(self, name: str, **limits: int | None) -> dict[str, Any]:
        """Change the given limits of a tenant (None: unlimited); the others stay."""
        return self._json("PATCH", f"{PREFIX}/tenants/{name}", json_body=limits)

    def tenants(self) -> list[dict[str, Any]]:
        """Every tenant."""
        return self._json("GET", f"{PREFIX}/tenants")

    def delete_tenant(self, name: str) -> None:
        """Remove a tenant (its keys are revoked)."""
        self._json("DELETE", f"{PREFIX}/tenants/{name}")

    def create_key(self, tenant: str, **options: Any) -> dict[str, Any]:
        """A new key: the reply holds the key itself, shown this once."""
        return self._json("POST", f"{PREFIX}/keys", json_body={"tenant": tenant, **options})

    def keys(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Every key (never a secret), or a tenant's."""
        return self._json("GET", f"{PREFIX}/keys", params={"tenant": tenant} if tenant else None)

    def revoke(self, key_id: str) -> None:
        """Revoke a key: it stops working at once."""
        self._json("DELETE", f"{PREFIX}/keys/{key_id}")

    def usage(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Usage per day, tenant, key, model and via (http, session, job)."""
        return self._json("GET", f"{PREFIX}/usage", params={"tenant": tenant} if tenant else None)
