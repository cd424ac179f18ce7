"""Which request heads the zero-copy path takes: plain GET/HEAD only, anything else to hypercorn."""

from __future__ import annotations

import pytest

from runtime.http.zerocopy import _parse_head


def test_a_plain_get_is_parsed_with_lower_case_header_names():
    request = _parse_head(b"GET /blobs/x?y=1 HTTP/1.1\r\nHost: a\r\nRange:  bytes=0-1 \r\n\r\n")
    assert request is not None
    assert (request.method, request.path, request.query) == ("GET", "/blobs/x", "y=1")
    assert request.headers == {"host": "a", "range": "bytes=0-1"}


@pytest.mark.parametrize("head", [
    b"POST /blobs/x HTTP/1.1\r\nHost: a\r\n\r\n",  # not GET/HEAD
    b"GET /blobs/x HTTP/1.0\r\nHost: a\r\n\r\n",  # HTTP/1.0: hypercorn's keep-alive rules
    b"GET http://a/blobs/x HTTP/1.1\r\nHost: a\r\n\r\n",  # absolute form
    b"GET /blobs/x HTTP/1.1\r\nContent-Length: 3\r\n\r\n",  # a body
    b"GET /blobs/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /blobs/x HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
    b"GET /blobs/x HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"GET /blobs/x HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n",  # repeated: the guard's 400
    b"GET /blobs/x HTTP/1.1\r\nX-A: 1\r\n  folded\r\n\r\n",  # obs-fold
    b"GET /blobs/x HTTP/1.1\r\nX-A : 1\r\n\r\n",  # whitespace before the colon
    b"GET /blobs/x HTTP/1.1\r\nNoColon\r\n\r\n",
    b"GET /blobs/\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n",  # not ASCII
    b"GET  /blobs/x HTTP/1.1\r\n\r\n",  # two spaces
])
def test_anything_unusual_is_left_to_hypercorn(head):
    assert _parse_head(head) is None
