"""decode_json: every hostile body is one InvalidJson line, never another exception."""

from __future__ import annotations

import pytest

from runtime.http.jsonbody import InvalidJson, decode_json


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[" * 100_000, "nested too deeply"),  # RecursionError, not a ValueError
        (b'{"a":' * 100_000, "nested too deeply"),
        (b"[" * 900 + b'"\\ud800"' + b"]" * 900, "lone UTF-16 surrogate"),
        (b"9" * 5000, "Exceeds the limit (4300 digits)"),
        (b'"\xff"', "can't decode byte 0xff"),
        (b'{"name": "\\ud800"}', "lone UTF-16 surrogate"),
        (b'["\\udfff\\ud83d"]', "lone UTF-16 surrogate"),  # halves in the wrong order
        (b"{nope", "Expecting property name"),
        (b"", "Expecting value"),
    ],
    ids=["array-depth", "object-depth", "deep-surrogate", "huge-int", "bad-utf8", "surrogate",
         "surrogates-out-of-order", "malformed", "empty"],
)
def test_hostile_bodies_are_one_clear_error(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidJson) as caught:
        decode_json(raw)
    message = str(caught.value)
    assert message.startswith("the request body is not valid JSON (") and reason in message
    assert "\n" not in message and len(message) < 300


def test_good_bodies_decode() -> None:
    assert decode_json(b'{"emoji": "\\ud83d\\ude00", "n": [1, 2.5, null]}') == {"emoji": "\U0001f600",
                                                                               "n": [1, 2.5, None]}
    assert decode_json(b"[" * 500 + b"]" * 500) is not None
