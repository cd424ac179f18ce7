"""What the async clients (the hub's) share: one httpx client per API, bearer auth, bounded waits, error mapping."""

from __future__ import annotations

from typing import Any, Self

import httpx

from runtime.errors import FlowError

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0


def open_http(base_url: str, *, token: str | None = None, timeout: float = READ_TIMEOUT,
              connect_timeout: float = CONNECT_TIMEOUT,
              transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """An AsyncClient for the API at `base_url`: bearer token, bounded waits, no redirects.

    For a plain http:// URL no TLS context is built: loading the CA bundle costs
    0.15-0.6 s here, a third of an incremental install or of a short CLI command.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        headers=headers, transport=transport, follow_redirects=False,
        timeout=httpx.Timeout(timeout, connect=min(timeout, connect_timeout), pool=None),
        limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
        verify=not base_url.startswith("http://"))  # True is httpx's default


def error_detail(response: httpx.Response) -> str:
    """The message of an error reply: `{"error": {"message"}}`, `{"detail"}`, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if body.get("detail"):
            return str(body["detail"])
    return response.text.strip()[:200] or response.reason_phrase


def describe(exc: httpx.TransportError) -> str:
    """A transport error as a short reason (some have no message of their own)."""
    return str(exc) or type(exc).__name__


class ApiClient:
    """One HTTP API at `base_url`; `async with` closes its connections.

    Error handling: a transport error becomes `self._unreachable(reason)`, an error
    status `self._refused(method, response)`; each subclass names its own errors.
    """

    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = READ_TIMEOUT,
                 connect_timeout: float = CONNECT_TIMEOUT,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self._http = open_http(self.base_url, token=token, timeout=timeout,
                               connect_timeout=connect_timeout, transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    def url(self, path: str) -> str:
        """The absolute URL of `path` (which starts with /)."""
        return self.base_url + path

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, self.url(path), **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(describe(exc)) from None
        if response.status_code >= 400:
            raise self._refused(method, response)
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._request(method, path, **kwargs)
        return response.json() if response.content else None

    def _unreachable(self, reason: str) -> FlowError:
        raise NotImplementedError

    def _refused(self, method: str, response: httpx.Response) -> FlowError:
        raise NotImplementedError
