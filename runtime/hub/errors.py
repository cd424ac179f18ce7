"""The hub's runtime errors (client side and server start-up).

    FlowError
    └── HubError
        ├── HubUnreachable   the hub did not answer (connection refused, timeout)
        ├── HubRequestFailed the hub answered with an error status
        └── PullFailed       a pulled file does not match its digest
"""

from __future__ import annotations

from runtime.errors import FlowError


class HubError(FlowError):
    """Base of the hub's runtime errors."""


class HubUnreachable(HubError):
    """The hub did not answer."""

    def __init__(self, url: str, reason: str):
        self.url = url
        self.reason = reason
        super().__init__(f"hub {url!r} is unreachable: {reason}")


class HubRequestFailed(HubError):
    """The hub answered with an error status; `detail` is its message."""

    def __init__(self, method: str, url: str, status: int, detail: str):
        self.method = method
        self.url = url
        self.status = status
        self.detail = detail
        super().__init__(f"{method} {url} -> {status}: {detail}")


class PullFailed(HubError):
    """A downloaded file does not match the digest the hub announced."""
