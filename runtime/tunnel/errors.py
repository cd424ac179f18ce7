"""The tunnel's errors.

    FlowError
    └── TunnelError
        ├── TunnelProtocolError   the peer broke the framing rules; the connection is closed
        ├── TunnelClosed          the connection is gone; every stream on it fails with this
        └── StreamReset           one stream was abandoned by either side
"""

from __future__ import annotations

from runtime.errors import FlowError


class TunnelError(FlowError):
    """Base of the tunnel's errors."""


class TunnelProtocolError(TunnelError):
    """The peer sent something the framing does not allow."""


class TunnelClosed(TunnelError):
    """The multiplexed connection is closed."""


class StreamReset(TunnelError):
    """A stream was reset; `by_peer` tells which side gave up, `reason` why."""

    def __init__(self, reason: str, *, by_peer: bool):
        self.reason = reason
        self.by_peer = by_peer
        who = "peer" if by_peer else "local side"
        super().__init__(f"stream reset by {who}: {reason}")
