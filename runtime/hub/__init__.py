"""The hub's HTTP API (seed-compatible) on hypercorn + quart-trio, and its client."""

from runtime.hub.app import create_hub_app
from runtime.hub.auth import ensure_admin_key
from runtime.hub.client import HubClient, PullResult
from runtime.hub.errors import HubError, HubRequestFailed, HubUnreachable, PullFailed
from runtime.hub.serve import serve_hub
from runtime.hub.state import HubSettings, HubState

__all__ = [
    "HubClient",
    "HubError",
    "HubRequestFailed",
    "HubSettings",
    "HubState",
    "HubUnreachable",
    "PullFailed",
    "PullResult",
    "create_hub_app",
    "ensure_admin_key",
    "serve_hub",
]
