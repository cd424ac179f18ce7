"""The hub's HTTP API (seed-compatible) on hypercorn + quart-trio; its client is runtime.clients.hub."""

from runtime.hub.app import create_hub_app
from runtime.hub.serve import serve_hub
from runtime.hub.state import HubSettings, HubState

__all__ = [
    "HubSettings",
    "HubState",
    "create_hub_app",
    "serve_hub",
]
