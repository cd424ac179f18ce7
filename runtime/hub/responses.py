"""JSON errors and the mapping from library errors to HTTP statuses."""

from __future__ import annotations

from typing import Any

from quart import Response, jsonify

from hub_store import (
    BlobCorrupt,
    BlobDigestMismatch,
    BlobNotFound,
    Conflict,
    InsufficientStorage,
    InvalidIdentifier,
    NotFound,
    StoreError,
)


class ApiError(Exception):
    """An HTTP error answered as `{"detail": message}` (FastAPI's shape, as the seed's hub used)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        super().__init__(detail)


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    """A JSON error response."""
    response = jsonify({"detail": detail})
    response.status_code = status
    for k, v in (headers or {}).items():
        response.headers[k] = v
    return response


def status_for(exc: BaseException) -> int:
    """The HTTP status for a store or packer error."""
    from packer import LimitExceeded, PackerError, SignatureError

    if isinstance(exc, InvalidIdentifier | BlobDigestMismatch):
        return 400
    if isinstance(exc, NotFound | BlobNotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, InsufficientStorage):
        return 507
    if isinstance(exc, BlobCorrupt):
        return 500
    if isinstance(exc, LimitExceeded):
        return 413
    if isinstance(exc, SignatureError):
        return 403
    if isinstance(exc, PackerError | StoreError):
        return 400
    return 500


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """`data` as a JSON response."""
    response = jsonify(data)
    response.status_code = status
    for k, v in (headers or {}).items():
        response.headers[k] = v
    return response
