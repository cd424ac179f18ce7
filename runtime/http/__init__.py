"""Shared HTTP plumbing for the hub and the gateway: serving apps and serving downloads."""

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
