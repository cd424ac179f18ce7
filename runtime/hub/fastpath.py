"""The nodes' hot path without quart: GET/HEAD of a small blob answered straight on ASGI.

A node fetches many small blobs by digest; quart's request/response machinery costs
more than the work itself (BASELINES.md section 4: bare hypercorn on Trio is ~40 %
faster than quart-trio per request). Small blobs (<= SMALL_BLOB) are read whole,
digest-checked and answered here with the same Range/ETag semantics as
`runtime.http.serve_bytes` (the pure `runtime.http.select` decides); anything else,
large blobs and every error included, falls through to the quart app.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from hub_store import BlobCorrupt, BlobNotFound, InvalidIdentifier, ids
from runtime.api import error_body
from runtime.http import content_range, select
from runtime.hub.downloads import IMMUTABLE, read_small_checked
from runtime.hub.state import HubState

PREFIX = "/blobs/"
log = logging.getLogger("flowctl.hub")


class BlobFastPath:
    """ASGI middleware in front of the hub's quart app (installed as `app.asgi_app`)."""

    def __init__(self, asgi_app: Any, state: HubState):
        self.asgi_app = asgi_app
        self.state = state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (scope["type"] != "http" or scope["method"] not in ("GET", "HEAD")
                or not scope["path"].startswith(PREFIX) or self.state.settings.private
                or self.state.data.remote is not None  # blobs in S3: quart answers with a redirect
                or not await self._small_blob(scope, send)):
            await self.asgi_app(scope, receive, send)

    async def _small_blob(self, scope: dict[str, Any], send: Any) -> bool:
        """Answer if the blob is small and fine; False hands the request to quart."""
        try:
            digest = ids.digest(scope["path"][len(PREFIX):])
            data = await self.state.run(read_small_checked, self.state, digest)
        except (InvalidIdentifier, BlobNotFound):
            return False  # quart answers with the JSON error
        except BlobCorrupt as exc:  # quarantined by now: quart would say 404, the truth is 500
            log.error("hub: %s", exc)
            body = json.dumps(error_body(str(exc))).encode()
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return True
        if data is None:
            return False
        request_headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        selection = select(request_headers, size=len(data), etag=digest)
        headers = [(b"etag", f'"{digest}"'.encode()), (b"cache-control", IMMUTABLE.encode())]
        body = b""
        if selection.status not in (304, 412):
            headers.append((b"accept-ranges", b"bytes"))
            if selection.status == 416:
                headers += [(b"content-range", f"bytes */{len(data)}".encode()), (b"content-length", b"0")]
            else:
                headers += [(b"content-type", b"application/octet-stream"),
                            (b"content-length", str(selection.length).encode())]
                if selection.status == 206:
                    headers.append((b"content-range",
                                    content_range(selection.start, selection.stop, len(data)).encode()))
                if scope["method"] == "GET":
                    body = data[selection.start:selection.stop]
        await send({"type": "http.response.start", "status": selection.status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return True
