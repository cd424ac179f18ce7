"""Following a hub's download redirect to its blob store, without the hub's credentials.

A hub whose blobs are in an S3-compatible store answers a download with `307` to a presigned
URL. The client follows it on a separate connection pool (`store_client`): no default
headers, so the hub's `Authorization` never reaches the store (the URL's signature is the
only credential there), and TLS always verified, whatever the hub's own scheme. Only the
headers the caller names (Range, If-Range, Accept-Encoding) go along. A presigned URL the
store refuses (403: expired, or clocks apart) is the caller's cue to ask the hub again.
"""

from __future__ import annotations

import httpx

REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_HOPS = 3
# What a store answers for a presigned URL past its expiry (S3: 403 AccessDenied "Request has expired").
REFUSED = frozenset({401, 403})


def store_client(*, timeout: float = 30.0, connect_timeout: float = 10.0) -> httpx.AsyncClient:
    """A connection pool for blob stores: no credentials, no redirects of its own, TLS verified."""
    return httpx.AsyncClient(follow_redirects=False,
                             timeout=httpx.Timeout(timeout, connect=min(timeout, connect_timeout), pool=None),
                             limits=httpx.Limits(max_connections=16, max_keepalive_connections=8))


async def get_following(hub: httpx.AsyncClient, store: httpx.AsyncClient, url: str,
                        headers: dict[str, str], *, store_headers: dict[str, str] | None = None,
                        http_timeout: httpx.Timeout | None = None) -> tuple[httpx.Response, bool]:
    """GET `url` on `hub` (streamed); follow redirects on `store`. (response, whether redirected).

    `store_headers` replaces `headers` for the store's hops (e.g. without an If-Range that
    named the hub's ETag). The caller closes the response.
    Error handling: httpx.TooManyRedirects past MAX_HOPS or for a Location that is not http(s).
    """
    limit: httpx.Timeout | httpx._client.UseClientDefault = (
        httpx.USE_CLIENT_DEFAULT if http_timeout is None else http_timeout)
    response = await hub.send(hub.build_request("GET", url, headers=headers, timeout=limit), stream=True)
    redirected = False
    hops = 0
    while response.status_code in REDIRECTS and "location" in response.headers:
        target = response.url.join(response.headers["location"])
        await response.aclose()
        hops += 1
        if hops > MAX_HOPS or target.scheme not in ("http", "https"):
            raise httpx.TooManyRedirects(f"the download of {url} was redirected to {target.scheme}:// "
                                         f"or more than {MAX_HOPS} times",
                                         request=response.request)
        sent = headers if store_headers is None else store_headers
        response = await store.send(store.build_request("GET", target, headers=sent, timeout=limit), stream=True)
        redirected = True
    return response, redirected

