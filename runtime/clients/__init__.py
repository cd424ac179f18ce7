"""Clients of the control plane's HTTP APIs (hub, cluster, gateway admin), apart from the servers.

Importing them never loads quart, hypercorn or a server module, and the admin clients (cluster,
gateway) use only the standard library's http.client, not httpx (whose httpcore imports Trio
and anyio), so the CLI's admin commands start fast (tests/runtime/clients/test_imports.py).
The hub's client is async (httpx under Trio): the node streams downloads with it.
"""

from runtime.clients.errors import (
    HubError,
    HubRequestFailed,
    HubUnreachable,
    PlaneError,
    PullFailed,
)

# The clients are imported on first use (PEP 562): `flowctl tenants ls` needs the gateway's
# client only, not the hub's (which loads hub_store and packer for its identifiers).
_LAZY = {
    "ClusterClient": "runtime.clients.cluster",
    "GatewayAdminClient": "runtime.clients.gateway",
    "HubClient": "runtime.clients.hub",
    "ManifestResponse": "runtime.clients.hub",
    "PullResult": "runtime.clients.hub",
}

__all__ = [
    "ClusterClient",
    "GatewayAdminClient",
    "HubClient",
    "HubError",
    "HubRequestFailed",
    "HubUnreachable",
    "ManifestResponse",
    "PlaneError",
    "PullFailed",
    "PullResult",
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'runtime.clients' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
