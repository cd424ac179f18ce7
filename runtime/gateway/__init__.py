"""The OpenAI-compatible gateway: authenticate, limit, route over the tunnel, relay, account.

    gateway = Gateway(scheduler, keys=KeyStore.open(data_dir / "gateway.db"))
    app.asgi_app = GatewayDispatcher(gateway, app.asgi_app)   # /v1/* bypasses quart
"""

from runtime.gateway.app import Gateway, GatewayDispatcher
from runtime.gateway.errors import GatewayError

__all__ = ["Gateway", "GatewayDispatcher", "GatewayError"]
