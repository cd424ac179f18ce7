"""JSON replies of the admin APIs: a body as JSON, an error as `{"detail": message}`."""

from __future__ import annotations

from typing import Any

from quart import Response, jsonify

from runtime.errors import FlowError


class ApiError(FlowError):
    """An HTTP error answered as `{"detail": message}` (FastAPI's shape, as the seed's hub used)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        super().__init__(detail)


# error_body's OpenAPI schema, for the descriptions of every admin API.
ERROR_SCHEMA = {"type": "object", "required": ["detail"], "properties": {"detail": {
    "type": "string", "description": "what went wrong, in one line"}},
    "description": "the admin APIs' error body (docs/api-errors.md)"}


def error_body(detail: str) -> dict[str, str]:
    """The admin APIs' error body (docs/api-errors.md): FastAPI's, which the seeds' clients read."""
    return {"detail": detail}


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    """A JSON error response."""
    response = jsonify(error_body(detail))
    response.status_code = status
    for k, v in (headers or {}).items():
        response.headers[k] = v
    return response


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """`data` as a JSON response."""
    response = jsonify(data)
    response.status_code = status
    for k, v in (headers or {}).items():
        response.headers[k] = v
    return response
