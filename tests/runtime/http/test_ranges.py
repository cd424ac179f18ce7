"""Range parsing and precondition evaluation, without a server."""

from __future__ import annotations

import pytest

from runtime.http.ranges import (
    Selection,
    Unsatisfiable,
    content_range,
    etag_matches,
    http_date,
    parse_range,
    select,
)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", (0, 100)),
        ("bytes=0-0", (0, 1)),
        ("bytes=999-999", (999, 1000)),  # last byte
        ("bytes=10-", (10, 1000)),  # open-ended
        ("bytes=-100", (900, 1000)),  # suffix
        ("bytes=-5000", (0, 1000)),  # suffix longer than the file: all of it
        ("bytes=500-5000", (500, 1000)),  # end clipped
        ("BYTES = 1-2 ", (1, 3)),
        ("bytes=1000-", Unsatisfiable(1000)),
        ("bytes=1000-2000", Unsatisfiable(1000)),
        ("bytes=-0", Unsatisfiable(1000)),
        ("bytes=5-4", None),  # invalid: ignored
        ("bytes=-", None),
        ("bytes=", None),
        ("bytes=a-b", None),
        ("bytes=+1-2", None),
        ("bytes=1-2-3", None),
        ("items=0-1", None),
        ("0-1", None),
        ("bytes=0-1,5-6", None),  # several ranges: full 200
    ],
)
def test_parse_range(header: str | None, expected: object) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=0-0", "bytes=-1", "bytes=0-", "bytes=5-"])
def test_empty_representation_ignores_range(header: str) -> None:
    assert parse_range(header, 0) is None


def test_content_range_is_inclusive() -> None:
    assert content_range(0, 100, 1000) == "bytes 0-99/1000"


@pytest.mark.parametrize(
    ("header", "weak", "expected"),
    [
        ('"abc"', False, True),
        ('"x", "abc"', False, True),
        ('W/"abc"', True, True),
        ('W/"abc"', False, False),
        ("*", False, True),
        ('"abcd"', True, False),
        ("abc", True, False),  # unquoted: malformed
        ('"x" junk', True, False),
    ],
)
def test_etag_matches(header: str, weak: bool, expected: bool) -> None:
    assert etag_matches(header, "abc", weak=weak) is expected


def test_select_precedence() -> None:
    def sel(**headers: str) -> Selection:
        return select({k.replace("_", "-"): v for k, v in headers.items()}, size=10, etag="e",
                      last_modified=1_000_000)

    assert sel() == Selection(200, 0, 10)
    assert sel(If_None_Match='"e"', Range="bytes=0-1") == Selection(304)
    assert sel(If_None_Match='"other"', Range="bytes=0-1") == Selection(206, 0, 2)
    assert sel(If_Match='"other"') == Selection(412)
    assert sel(If_Match='"e"', Range="bytes=-3") == Selection(206, 7, 10)
    assert sel(If_Unmodified_Since=http_date(999_999)) == Selection(412)
    assert sel(If_Unmodified_Since=http_date(1_000_000)) == Selection(200, 0, 10)
    assert sel(If_Match='"e"', If_Unmodified_Since=http_date(999_999)).status == 200
    assert sel(Range="bytes=10-") == Selection(416)
    assert sel(Range="bytes=2-", If_Range='"e"') == Selection(206, 2, 10)
    assert sel(Range="bytes=2-", If_Range='"old"') == Selection(200, 0, 10)
    assert sel(Range="bytes=2-", If_Range='W/"e"') == Selection(200, 0, 10)
    assert sel(Range="bytes=2-", If_Range=http_date(1_000_000)) == Selection(206, 2, 10)
    assert sel(Range="bytes=2-", If_Range=http_date(999_999)) == Selection(200, 0, 10)
    assert sel(If_Modified_Since=http_date(1_000_000)) == Selection(304)
    assert sel(If_Modified_Since=http_date(999_999)) == Selection(200, 0, 10)
    assert sel(If_Modified_Since="garbage") == Selection(200, 0, 10)
    # If-None-Match wins over If-Modified-Since when both are sent.
    assert sel(If_None_Match='"x"', If_Modified_Since=http_date(1_000_000)).status == 200


def test_select_reads_headers_in_any_case() -> None:
    headers = {"range": "bytes=0-0", "IF-RANGE": '"e"'}
    assert select(headers, size=10, etag="e") == Selection(206, 0, 1)


HUGE = "9" * 5000  # past int()'s 4,300-digit limit


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"bytes={HUGE}-", Unsatisfiable(1000)),  # valid syntax, starts past the end: 416
        (f"bytes={HUGE}-{HUGE}", Unsatisfiable(1000)),
        (f"bytes=0-{HUGE}", (0, 1000)),  # the end is clipped
        (f"bytes=-{HUGE}", (0, 1000)),  # a suffix longer than the file: all of it
        (f"bytes={HUGE}-5", None),  # last < first: invalid, ignored
        (f"bytes={HUGE}9-{HUGE}", None),
        (f"bytes={'0' * 5000}12-{'0' * 5000}13", (12, 14)),  # leading zeros are not magnitude
        ("bytes=\u0663-\u0664", None),  # RFC 9110 DIGIT is ASCII only
    ],
)
def test_parse_range_with_positions_of_any_length(header: str, expected: object) -> None:
    assert parse_range(header, 1000) == expected


def test_dates_with_absurd_fields_are_ignored() -> None:
    # A zone offset past a C int raised OverflowError from email.utils.
    absurd = "Sun, 06 Nov 1994 08:49:37 +99999999999999999999"
    for name in ("If-Modified-Since", "If-Unmodified-Since"):
        assert select({name: absurd}, size=10, etag="e", last_modified=1_000_000) == Selection(200, 0, 10)
    headers = {"Range": "bytes=2-", "If-Range": absurd}
    assert select(headers, size=10, etag="e", last_modified=1_000_000) == Selection(200, 0, 10)
