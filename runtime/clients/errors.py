"""The clients' errors: what went wrong talking to a hub or a control plane.

    FlowError (runtime.errors)
    ├── HubError
    │   ├── HubUnreachable    the hub did not answer (connection refused, timeout)
    │   ├── HubRequestFailed  the hub answered with an error status or an unusable body
    │   └── PullFailed        a pulled file does not match its digest
    └── PlaneError            the control plane could not be reached or refused the request
"""

from __future__ import annotations

from runtime.errors import FlowError


class HubError(FlowError):
    """Base of the errors of talking to a hub."""


class HubUnreachable(HubError):
    """The hub did not answer."""

    def __init__(self, url: str, reason: str):
        self.url = url
        self.reason = reason
        super().__init__(f"hub {url!r} is unreachable: {reason}")


class HubRequestFailed(HubError):
    """The hub answered with an error status, or with a body that cannot be used; `detail` says which."""

    def __init__(self, method: str, url: str, status: int, detail: str):
        self.method = method
        self.url = url
        self.status = status
        self.detail = detail
        super().__init__(f"{method} {url} -> {status}: {detail}")


class PullFailed(HubError):
    """A downloaded file does not match the digest the hub announced."""


class PlaneError(FlowError):
    """The control plane could not be reached (`status` None) or refused the request."""

    def __init__(self, message: str, *, status: int | None = None):
        self.status = status
        super().__init__(message)
