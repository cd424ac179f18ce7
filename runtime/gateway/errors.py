"""Gateway errors in OpenAI's shape: {"error": {"message", "type", "code"}} with an HTTP status."""

from __future__ import annotations

import json

from runtime.errors import FlowError

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 405: "invalid_request_error", 408: "timeout",
          413: "invalid_request_error",
          429: "rate_limit_error", 502: "upstream_error", 503: "service_unavailable", 504: "timeout"}


class GatewayError(FlowError):
    """A request the gateway answers itself, with `status` and an OpenAI error body."""

    def __init__(self, status: int, message: str, code: str, *, param: str | None = None,
                 retry_after: float | None = None, allow: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.retry_after = retry_after
        self.allow = allow

    def body(self) -> bytes:
        """The JSON body."""
        return json.dumps({"error": {"message": self.message, "type": _TYPES.get(self.status, "error"),
                                     "param": self.param, "code": self.code}}).encode()

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Content headers, plus Retry-After (whole seconds, at least 1) when rate limited, Allow on 405."""
        out = [(b"content-type", b"application/json")]
        if self.retry_after is not None:
            out.append((b"retry-after", str(max(1, int(-(-self.retry_after // 1)))).encode()))
        if self.status == 401:
            out.append((b"www-authenticate", b"Bearer"))
        if self.allow is not None:
            out.append((b"allow", self.allow.encode()))
        return out
