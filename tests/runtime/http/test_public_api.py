"""The package's public names: exactly these, all importable from `runtime.http`."""

import runtime.http

PUBLIC = {
    "DEFAULT_CHUNK_SIZE", "DEFAULT_GRACEFUL_TIMEOUT", "DEFAULT_KEEP_ALIVE_TIMEOUT",
    "DEFAULT_MAX_HEADER_BYTES", "DEFAULT_STALL_TIMEOUT", "FileChanged", "ListenError",
    "Selection", "Unsatisfiable", "content_disposition", "content_range", "open_test_server",
    "parse_range", "redact_url", "select", "serve_app", "serve_bytes", "serve_file",
}


def test_public_names() -> None:
    assert set(runtime.http.__all__) == PUBLIC
    for name in PUBLIC:
        obj = getattr(runtime.http, name)
        if callable(obj):
            assert obj.__doc__, f"{name} has no docstring"
