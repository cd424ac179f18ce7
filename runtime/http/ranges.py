"""Which bytes a GET answers with: Range, If-Range and the other preconditions (RFC 9110).

Pure functions, no I/O and no web framework, so every rule is tested without a server.
Byte positions are half-open ``(start, stop)`` pairs, like Python slices; the inclusive
form of the wire (``Content-Range: bytes first-last/size``) appears only in
`content_range`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from werkzeug.datastructures import Headers

__all__ = [
    "Selection",
    "Unsatisfiable",
    "content_range",
    "etag_matches",
    "http_date",
    "parse_range",
    "select",
]

_RANGE_SPEC = re.compile(r"\s*([0-9]*)\s*-\s*([0-9]*)\s*")
_ENTITY_TAG = re.compile(r'\s*(W/)?"([^"]*)"\s*(?:,|$)')
# A byte position with more significant digits than this is past the end of any file (10**18
# bytes is an exabyte), so it is compared as a string, never converted.
_MAX_POSITION_DIGITS = 18


@dataclass(frozen=True)
class Unsatisfiable:
    """A Range none of whose bytes exist: answered 416 with ``Content-Range: bytes */size``."""

    size: int


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | Unsatisfiable:
    """Parse one ``Range`` header against a representation of `size` bytes.

    Returns ``(start, stop)`` (half-open) for one satisfiable range, `Unsatisfiable` when
    the range lies past the end, and None when the whole representation should be sent:
    no header, a header that is not valid ``bytes=`` syntax (RFC 9110 says ignore it),
    several ranges (which a server may answer with the full 200), or an empty file.
    """
    if header is None:
        return None
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = _RANGE_SPEC.fullmatch(spec)
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if first:
        if last and _magnitude(last) < _magnitude(first):
            return None  # syntactically invalid: ignored, not 416
        if size == 0:
            return None
        start = _position(first)
        if start is None or start >= size:
            return Unsatisfiable(size)
        end = _position(last) if last else None
        return start, size if end is None else min(end + 1, size)
    if not last:
        return None  # "bytes=-" is not a range
    if size == 0:
        return None
    suffix = _position(last)
    if suffix == 0:
        return Unsatisfiable(size)
    if suffix is None or suffix >= size:
        return 0, size
    return size - suffix, size


def _position(digits: str) -> int | None:
    """The number `digits` spell, or None when it is longer than any representation can be.

    Never `int()` on an unbounded string: past 4,300 digits Python refuses (ValueError).
    """
    significant = digits.lstrip("0")
    return int(significant or "0") if len(significant) <= _MAX_POSITION_DIGITS else None


def _magnitude(digits: str) -> tuple[int, str]:
    """A key that orders digit strings of any length as the numbers they spell."""
    significant = digits.lstrip("0")
    return len(significant), significant


def content_range(start: int, stop: int, size: int) -> str:
    """The ``Content-Range`` value for bytes ``[start, stop)`` of `size`."""
    return f"bytes {start}-{stop - 1}/{size}"


def etag_matches(header: str, etag: str, *, weak: bool) -> bool:
    """Whether an ``If-None-Match``/``If-Match``/``If-Range`` list names `etag` (unquoted).

    `weak` picks the comparison: weak ignores the ``W/`` prefix, strong never matches it.
    A malformed list matches nothing.
    """
    if header.strip() == "*":
        return True
    pos, text = 0, header.strip()
    while pos < len(text):
        match = _ENTITY_TAG.match(text, pos)
        if match is None:
            return False
        is_weak, value = match.group(1) is not None, match.group(2)
        if value == etag and (weak or not is_weak):
            return True
        pos = match.end()
    return False


def http_date(timestamp: float) -> str:
    """An IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``) for a POSIX timestamp."""
    return format_datetime(datetime.fromtimestamp(int(timestamp), UTC), usegmt=True)


def _parse_http_date(value: str) -> float | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):  # a zone offset past C int: Overflow
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.timestamp()


@dataclass(frozen=True)
class Selection:
    """What to answer: the status, and for 200/206 the byte span ``[start, stop)`` to send."""

    status: int
    start: int = 0
    stop: int = 0

    @property
    def length(self) -> int:
        """Bytes in the body (0 for 304/412/416)."""
        return self.stop - self.start


def select(
    headers: Mapping[str, str] | Headers,
    *,
    size: int,
    etag: str,
    last_modified: float | None = None,
) -> Selection:
    """Evaluate a GET/HEAD's preconditions and Range against one representation.

    The order is RFC 9110 section 13.2.2: If-Match or else If-Unmodified-Since (412),
    If-None-Match or else If-Modified-Since (304), then Range, honoured only when If-Range, if sent, still
    names this representation (strong ETag, or the exact Last-Modified date).
    `headers` may be quart's request headers or any mapping (names in any case).
    """
    headers = _lowercase(headers)
    if_match = headers.get("if-match")
    if if_match is not None:
        if not etag_matches(if_match, etag, weak=False):
            return Selection(412)
    elif last_modified is not None:
        before = _parse_http_date(headers.get("if-unmodified-since") or "")
        if before is not None and int(last_modified) > before:
            return Selection(412)
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        if etag_matches(if_none_match, etag, weak=True):
            return Selection(304)
    elif last_modified is not None:
        since = headers.get("if-modified-since")
        when = _parse_http_date(since) if since else None
        if when is not None and int(last_modified) <= when:
            return Selection(304)
    span = parse_range(headers.get("range"), size)
    if span is not None and not _if_range_holds(headers.get("if-range"), etag, last_modified):
        span = None
    if span is None:
        return Selection(200, 0, size)
    if isinstance(span, Unsatisfiable):
        return Selection(416)
    return Selection(206, *span)


def _lowercase(headers: Mapping[str, str] | Headers) -> dict[str, str]:
    # The first value of a repeated header wins, as with werkzeug's Headers.get.
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        lowered.setdefault(name.lower(), value)
    return lowered


def _if_range_holds(if_range: str | None, etag: str, last_modified: float | None) -> bool:
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith(('"', "W/")):
        return etag_matches(value, etag, weak=False) and "," not in value
    when = _parse_http_date(value)
    return when is not None and last_modified is not None and int(last_modified) == when
