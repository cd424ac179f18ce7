"""One WebSocket between the control plane and a node, carrying many flow-controlled streams."""

from runtime.tunnel.errors import StreamReset, TunnelClosed, TunnelError, TunnelProtocolError
from runtime.tunnel.mux import DEFAULT_WINDOW, MessageTransport, Mux, Stream, open_mux

__all__ = [
    "DEFAULT_WINDOW",
    "MessageTransport",
    "Mux",
    "Stream",
    "StreamReset",
    "TunnelClosed",
    "TunnelError",
    "TunnelProtocolError",
    "open_mux",
]
