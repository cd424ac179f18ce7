"""The OpenAI-compatible gateway: authenticate, read and check the request, dispatch, relay.

    gateway = Gateway(dispatcher, keys.authenticate)
    app.asgi_app = FrontDoor(gateway, app.asgi_app)   # /v1/* bypasses quart

The names load on first use, so `runtime.gateway.errors` (which the dispatcher and the
clients' callers import) never drags in the server.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Gateway", "FrontDoor", "GatewayError"]


def __getattr__(name: str) -> Any:
    if name in ("Gateway", "FrontDoor"):
        from runtime.gateway import app

        return getattr(app, name)
    if name == "GatewayError":
        from runtime.gateway.errors import GatewayError

        return GatewayError
    raise AttributeError(f"module 'runtime.gateway' has no attribute {name!r}")
