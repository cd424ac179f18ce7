"""A client for the control plane's cluster API (what `flowctl deploy/status/node token` call)."""

from __future__ import annotations

from typing import Any

from runtime.clients._base import PlaneClient


class ClusterClient(PlaneClient):
    """Nodes, deployments and join tokens of one control plane; `async with ClusterClient(url, token=...)`.

    Error handling: every failure is a PlaneError (`status` None when unreachable).
    """

    async def handshake(self) -> dict[str, Any]:
        """Who listens at this URL (raises PlaneError if it is not a flowctl control plane)."""
        return await self._json("GET", "/api/cluster/handshake")

    async def status(self) -> dict[str, Any]:
        """Nodes, deployments and models."""
        return await self._json("GET", "/api/cluster/status")

    async def deploy(self, service: str, version: str = "latest", *, replicas: int = 1,
                     nodes: list[str] | None = None) -> dict[str, Any]:
        """Create or upgrade a deployment."""
        return await self._json("POST", "/api/deployments", json={
            "service": service, "version": version, "replicas": replicas, "nodes": nodes or []})

    async def scale(self, service: str, replicas: int) -> dict[str, Any]:
        """Change a deployment's replica count."""
        return await self._json("PATCH", f"/api/deployments/{service}", json={"replicas": replicas})

    async def undeploy(self, service: str) -> None:
        """Remove a deployment."""
        await self._json("DELETE", f"/api/deployments/{service}")

    async def create_token(self, name: str, *, ttl_s: float | None = None) -> dict[str, Any]:
        """A new join token (its secret is in the reply, and nowhere else)."""
        return await self._json("POST", "/api/cluster/tokens", json={"name": name, "ttl_s": ttl_s})

    async def tokens(self) -> list[dict[str, Any]]:
        """Every join token (without secrets)."""
        return await self._json("GET", "/api/cluster/tokens")

    async def revoke_token(self, token: str) -> None:
        """Revoke a join token by id or name."""
        await self._json("DELETE", f"/api/cluster/tokens/{token}")
