"""A client for the control plane's cluster API (what `flowctl deploy/status/node token` call)."""

from __future__ import annotations

from typing import Any

import httpx

from runtime.errors import FlowError

DEFAULT_TIMEOUT = 30.0


class PlaneError(FlowError):
    """The control plane could not be reached or refused the request."""

    def __init__(self, message: str, *, status: int | None = None):
        self.status = status
        super().__init__(message)


class ClusterClient:
    """Talks to one control plane; use as `async with ClusterClient(url, token=...) as plane:`."""

    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = DEFAULT_TIMEOUT):
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=headers,
                                       timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)))

    async def __aenter__(self) -> ClusterClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise PlaneError(f"control plane {self.base_url!r} is unreachable: "
                             f"{str(exc) or type(exc).__name__}") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail") or response.text
            except (ValueError, AttributeError):
                detail = response.text.strip()[:200] or response.reason_phrase
            raise PlaneError(f"{detail} (HTTP {response.status_code})", status=response.status_code)
        return response.json() if response.content else None

    async def handshake(self) -> dict[str, Any]:
        """Who listens at this URL (raises PlaneError if it is not a flowctl control plane)."""
        return await self._call("GET", "/api/cluster/handshake")

    async def status(self) -> dict[str, Any]:
        """Nodes, deployments and models."""
        return await self._call("GET", "/api/cluster/status")

    async def deploy(self, service: str, version: str = "latest", *, replicas: int = 1,
                     nodes: list[str] | None = None) -> dict[str, Any]:
        """Create or upgrade a deployment."""
        return await self._call("POST", "/api/deployments", json={
            "service": service, "version": version, "replicas": replicas, "nodes": nodes or []})

    async def scale(self, service: str, replicas: int) -> dict[str, Any]:
        """Change a deployment's replica count."""
        return await self._call("PATCH", f"/api/deployments/{service}", json={"replicas": replicas})

    async def undeploy(self, service: str) -> None:
        """Remove a deployment."""
        await self._call("DELETE", f"/api/deployments/{service}")

    async def create_token(self, name: str, *, ttl_s: float | None = None) -> dict[str, Any]:
        """A new join token (its secret is in the reply, and nowhere else)."""
        return await self._call("POST", "/api/cluster/tokens", json={"name": name, "ttl_s": ttl_s})

    async def tokens(self) -> list[dict[str, Any]]:
        """Every join token (without secrets)."""
        return await self._call("GET", "/api/cluster/tokens")

    async def revoke_token(self, token: str) -> None:
        """Revoke a join token by id or name."""
        await self._call("DELETE", f"/api/cluster/tokens/{token}")
