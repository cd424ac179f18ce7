"""Shared HTTP plumbing for the hub and the gateway: serving apps and serving downloads.

    @app.route("/blobs/<ref>", methods=["GET", "HEAD"])
    async def blob(ref):
        digest = parse_digest(ref)               # never a raw URL piece in a path
        return await serve_file(store / digest, etag=digest, expected_size=size)

    async with trio.open_nursery() as nursery:   # or: async with open_test_server(app) as url
        urls = await nursery.start(partial(serve_app, app, host="0.0.0.0", port=5000))

`serve_file`/`serve_bytes` answer HEAD, Range (206/416), If-None-Match (304), If-Range;
`serve_app` runs hypercorn's Trio worker with a real 16 KiB header cap, idle/header and
stalled-client deadlines, and a bounded graceful drain on cancel.
"""

from runtime.http.files import (
    DEFAULT_CHUNK_SIZE,
    FileChanged,
    content_disposition,
    serve_bytes,
    serve_file,
)
from runtime.http.ranges import Selection, Unsatisfiable, content_range, parse_range, select
from runtime.http.server import (
    DEFAULT_GRACEFUL_TIMEOUT,
    DEFAULT_KEEP_ALIVE_TIMEOUT,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_STALL_TIMEOUT,
    ListenError,
    open_test_server,
    redact_url,
    serve_app,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_GRACEFUL_TIMEOUT",
    "DEFAULT_KEEP_ALIVE_TIMEOUT",
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_STALL_TIMEOUT",
    "FileChanged",
    "ListenError",
    "Selection",
    "Unsatisfiable",
    "content_disposition",
    "content_range",
    "open_test_server",
    "parse_range",
    "redact_url",
    "select",
    "serve_app",
    "serve_bytes",
    "serve_file",
]
