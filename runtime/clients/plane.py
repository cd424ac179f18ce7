"""The base of the control plane's admin clients: synchronous, on the standard library's http.client.

The CLI's admin commands (`status`, `deploy`, `tenants ls`, `keys create`, ...) make one or a few
calls each. httpx imports httpcore, which imports Trio and anyio eagerly: about 0.3 s of a 0.6 s
command. http.client costs a few milliseconds, so these commands start in about half the time.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from typing import Any, Self
from urllib.parse import urlencode, urlsplit

from runtime.clients.errors import PlaneError

READ_TIMEOUT = 30.0
CONNECT_TIMEOUT = 5.0
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "PATCH"})
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def error_message(status: int, reason: str, body: bytes) -> str:
    """The message of an error reply: `{"detail"}`, `{"error": {"message"}}`, else the start of the body."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if data.get("detail"):
            return str(data["detail"])
    return body.decode("utf-8", "replace").strip()[:200] or reason or f"HTTP {status}"


class PlaneClient:
    """One admin API of the control plane at `base_url`: `with Client(url, token=...) as c`.

    One kept-alive connection; a call on a connection the plane closed while idle is sent
    again on a fresh one when it is idempotent.

    Error handling: every failure is a PlaneError (`status` None when unreachable).
    """

    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = READ_TIMEOUT,
                 connect_timeout: float = CONNECT_TIMEOUT):
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PlaneError(f"control plane URL {base_url!r} is not an http:// or https:// URL")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._headers = {"Accept": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._conn: http.client.HTTPConnection | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connect(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self._https:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self.connect_timeout,
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.connect_timeout)
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(self.timeout)  # the connect deadline was shorter than a read's
        return conn

    def _json(self, method: str, path: str, *, json_body: Any = None,
              params: dict[str, str] | None = None) -> Any:
        """Call the API; the decoded JSON reply (None for an empty one)."""
        target = self._prefix + path + (f"?{urlencode(params)}" if params else "")
        body = json.dumps(json_body).encode() if json_body is not None else None
        headers = {**self._headers, **({"Content-Type": "application/json"} if body is not None else {})}
        for attempt in range(2):
            reused = self._conn is not None
            try:
                if self._conn is None:
                    self._conn = self._connect()
                self._conn.request(method, target, body=body, headers=headers)
                response = self._conn.getresponse()
                data = response.read()
                break
            except _STALE as exc:
                self.close()
                if reused and attempt == 0 and method in _IDEMPOTENT:
                    continue  # the plane closed the idle connection: once more on a fresh one
                raise self._unreachable(exc) from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise self._unreachable(exc) from None
        if response.will_close:
            self.close()
        if response.status >= 400:
            raise PlaneError(f"{error_message(response.status, response.reason, data)} "
                             f"(HTTP {response.status})", status=response.status)
        try:
            return json.loads(data) if data else None
        except (ValueError, RecursionError):
            raise PlaneError(f"control plane {self.base_url!r} answered {path} with something "
                             "that is not JSON") from None

    def _unreachable(self, exc: BaseException) -> PlaneError:
        reason = "timed out" if isinstance(exc, socket.timeout | TimeoutError) else (
            str(exc) or type(exc).__name__)
        return PlaneError(f"control plane {self.base_url!r} is unreachable: {reason}")
