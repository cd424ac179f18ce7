"""The engine_url a session client is handed: where it opens the session's WebSocket.

In order of precedence: the operator's public WebSocket URL (`--public-ws-url`, seed
002's WEBSOCKET_URL); else the scheme and host a trusted proxy forwarded
(X-Forwarded-Proto, X-Forwarded-Host), so a plane behind a TLS proxy hands out
wss://; else the request's own scheme and Host. X-Forwarded-* from any other peer
is ignored: a client must not choose the URL other clients are sent to.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

WS_PATH = "/ws/sessions/{session_id}"
FORWARDED_HEADERS = ("x-forwarded-proto", "x-forwarded-host")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class EngineUrls:
    """Builds engine_urls under the plane's settings."""

    public_ws_url: str | None = None
    trusted_proxies: tuple[Network, ...] = ()

    @classmethod
    def from_settings(cls, public_ws_url: str | None = None, trusted_proxies: Iterable[str] = ()) -> EngineUrls:
        """From the settings' text (CIDRs or addresses); ValueError names a bad one."""
        networks = []
        for item in trusted_proxies:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"trusted proxy {item!r} is not an IP address or CIDR") from None
        return cls(public_ws_url.rstrip("/") if public_ws_url else None, tuple(networks))

    def trusts(self, peer: str | None) -> bool:
        """Whether `peer` (the TCP peer's address) is one of the trusted proxies."""
        if not peer or not self.trusted_proxies:
            return False
        try:
            address = ipaddress.ip_address(peer.strip("[]"))
        except ValueError:
            return False  # a unix socket or a name: never a trusted proxy
        # A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d; they match IPv4 networks too.
        mapped = getattr(address, "ipv4_mapped", None)
        addresses = (address, mapped) if mapped is not None else (address,)
        return any(a in network for a in addresses for network in self.trusted_proxies)

    def url(self, session_id: str, *, scheme: str, host: str, peer: str | None,
            headers: Mapping[str, str]) -> str:
        """The engine_url of `session_id` for a request with this scheme, Host, peer and headers."""
        path = WS_PATH.format(session_id=session_id)
        if self.public_ws_url is not None:
            return self.public_ws_url + path
        secure = scheme in ("https", "wss")
        if self.trusts(peer):
            proto = _last(headers.get("x-forwarded-proto")).lower()
            if proto in ("http", "https", "ws", "wss"):
                secure = proto in ("https", "wss")
            forwarded_host = _last(headers.get("x-forwarded-host"))
            if _HOST.match(forwarded_host):
                host = forwarded_host
        return f"{'wss' if secure else 'ws'}://{host}{path}"


def _last(value: str | None) -> str:
    # Each proxy appends its value; the last one is the trusted proxy's own (the rest came from further out).
    return (value or "").rsplit(",", 1)[-1].strip()
