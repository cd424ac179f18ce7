"""A client for the control plane's cluster API (what `flowctl deploy/status/node token` call)."""

from __future__ import annotations

from typing import Any

from runtime.clients.plane import PlaneClient


class ClusterClient(PlaneClient):
    """Nodes, deployments and join tokens of one control plane; `with ClusterClient(url, token=...)`.

    Error handling: every failure is a PlaneError (`status` None when unreachable).
    """

    def handshake(self) -> dict[str, Any]:
        """Who listens at this URL (raises PlaneError if it is not a flowctl control plane)."""
        return self._json("GET", "/api/cluster/handshake")

    def status(self) -> dict[str, Any]:
        """Nodes, deployments and models."""
        return self._json("GET", "/api/cluster/status")

    def deploy(self, service: str, version: str = "latest", *, replicas: int | None = None,
               nodes: list[str] | None = None, track: str | None = None) -> dict[str, Any]:
        """Create or upgrade a deployment.

        `replicas` None keeps an existing count (new: 1); `nodes` None keeps an existing pin
        (new: anywhere), `[]` removes the pin; `track` "stable"/"latest" follows that channel,
        "" pins, None keeps the channel unless a version is named.
        """
        body: dict[str, Any] = {"service": service, "version": version}
        if track is not None:
            body["track"] = track
        if replicas is not None:
            body["replicas"] = replicas
        if nodes is not None:
            body["nodes"] = list(nodes)
        return self._json("POST", "/api/deployments", json_body=body)

    def scale(self, service: str, replicas: int) -> dict[str, Any]:
        """Change a deployment's replica count."""
        return self._json("PATCH", f"/api/deployments/{service}", json_body={"replicas": replicas})

    def undeploy(self, service: str) -> None:
        """Remove a deployment."""
        self._json("DELETE", f"/api/deployments/{service}")

    def create_token(self, name: str, *, ttl_s: float | None = None) -> dict[str, Any]:
        """A new join token (its secret is in the reply, and nowhere else)."""
        return self._json("POST", "/api/cluster/tokens", json_body={"name": name, "ttl_s": ttl_s})

    def tokens(self) -> list[dict[str, Any]]:
        """Every join token (without secrets)."""
        return self._json("GET", "/api/cluster/tokens")

    def revoke_token(self, token: str) -> None:
        """Revoke a join token by id or name."""
        self._json("DELETE", f"/api/cluster/tokens/{token}")
