"""The hub's quart-trio app: routes from api, downloads and admin; errors as JSON."""

from __future__ import annotations

import logging
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio
from quart_trio.wrappers import TrioRequest
from werkzeug.exceptions import HTTPException

from hub_store import (
    BlobCorrupt,
    BlobDigestMismatch,
    BlobNotFound,
    BlobStoreUnavailable,
    Conflict,
    InsufficientStorage,
    InvalidIdentifier,
    NotFound,
    StoreError,
)
from packer import LimitExceeded, PackerError, SignatureError
from runtime.api import ApiError, bearer_ok, error_response
from runtime.hub import admin, api, downloads, openapi
from runtime.hub.fastpath import BlobFastPath
from runtime.hub.state import HubState

log = logging.getLogger("flowctl.hub")
MAX_SMALL_BODY = 1 << 20


def _request_class(base: type[TrioRequest], publish_limit: int) -> type[TrioRequest]:
    """quart buffers any request body up to the cap fixed when the request is built; only a
    publish (PUT /api/services/...) may be large, everything else is capped at 1 MiB."""

    class HubRequest(base):  # type: ignore[misc, valid-type]  # mypy cannot follow a variable base
        def __init__(self, method: str, scheme: str, path: str, *args: Any, **kwargs: Any) -> None:
            if method == "PUT" and path.startswith("/api/services/"):
                kwargs["max_content_length"] = publish_limit
            super().__init__(method, scheme, path, *args, **kwargs)

    return HubRequest


def create_hub_app(state: HubState) -> QuartTrio:
    """Build the hub's ASGI app over `state` (no I/O happens here)."""
    app = QuartTrio("flowctl.hub")
    app.request_class = _request_class(app.request_class, state.settings.max_publish_bytes)
    app.config["MAX_CONTENT_LENGTH"] = MAX_SMALL_BODY
    app.config["BODY_TIMEOUT"] = state.settings.upload_idle_timeout
    app.config["RESPONSE_TIMEOUT"] = None  # downloads of large files to slow clients are fine
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # No redirects to "cleaned" URLs: a path is either exactly valid or refused.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False

    @app.before_request
    async def private_hub() -> Response | None:
        if state.settings.private and request.path != "/health" and \
                not bearer_ok(request.headers.get("Authorization"), state.admin_key_hash):
            return error_response(401, "this hub is private: pass its key", {"WWW-Authenticate": "Bearer"})
        return None

    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.detail, exc.headers)

    @app.errorhandler(StoreError)
    async def store_error(exc: StoreError) -> Response:
        status = status_for(exc)
        if status >= 500:
            log.error("hub: %s", exc)
        return error_response(status, str(exc))

    @app.errorhandler(PackerError)
    async def packer_error(exc: PackerError) -> Response:
        return error_response(status_for(exc), f"bad bundle: {exc}")

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        return error_response(exc.code or 500, exc.description or exc.name)

    api.register(app, state)
    downloads.register(app, state)
    admin.register(app, state)
    openapi.register(app)
    # quart types asgi_app as a method over hypercorn's TypedDict scopes; the middleware takes dicts.
    app.asgi_app = BlobFastPath(app.asgi_app, state)  # type: ignore[method-assign, assignment]
    return app


def status_for(exc: BaseException) -> int:
    """The HTTP status for a store or packer error."""
    if isinstance(exc, InvalidIdentifier | BlobDigestMismatch):
        return 400
    if isinstance(exc, NotFound | BlobNotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, InsufficientStorage):
        return 507
    if isinstance(exc, BlobStoreUnavailable):
        return 503
    if isinstance(exc, BlobCorrupt):
        return 500
    if isinstance(exc, LimitExceeded):
        return 413
    if isinstance(exc, SignatureError):
        return 403
    if isinstance(exc, PackerError | StoreError):
        return 400
    return 500
