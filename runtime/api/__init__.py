"""The control plane's shared API kit: the admin key and the admin APIs' JSON replies.

The hub, the scheduler and the gateway import it as peers; none imports another for it.

    if not bearer_ok(request.headers.get("Authorization"), admin_key_hash):
        return error_response(401, "this needs the admin key", {"WWW-Authenticate": "Bearer"})
    raise ApiError(404, f"no such download {name!r}")   # answered as {"detail": ...}
"""

from runtime.api.auth import bearer_ok, ensure_admin_key, hash_key
from runtime.api.responses import ERROR_SCHEMA, ApiError, error_body, error_response, json_response

__all__ = [
    "ERROR_SCHEMA",
    "ApiError",
    "bearer_ok",
    "ensure_admin_key",
    "error_body",
    "error_response",
    "hash_key",
    "json_response",
]
