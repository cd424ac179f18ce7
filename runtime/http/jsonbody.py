"""Decoding a JSON request body so that any hostile input is one `InvalidJson`, never a 500.

`json.loads` raises ValueError for malformed text and for integers past 4,300 digits,
UnicodeDecodeError for bad UTF-8, and RecursionError for nesting deeper than the
interpreter's stack allows (``[`` * 100000): the last is no ValueError, so routes that
caught ValueError answered it with a 500 and a traceback. It also accepts a lone UTF-16
surrogate (``"\ud800"``), a str that no UTF-8 encoder (SQLite, a socket) takes later.

    try:
        body = decode_json(raw)
    except InvalidJson as exc:
        return error_response(400, str(exc))
"""

from __future__ import annotations

import json
import re
from typing import Any

from runtime.errors import FlowError

__all__ = ["InvalidJson", "decode_json"]

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class InvalidJson(FlowError):
    """A request body that is not JSON this server decodes; the message is one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the request body is not valid JSON ({reason})")
        self.reason = reason


def decode_json(raw: bytes) -> Any:
    """The JSON value `raw` holds, or `InvalidJson` saying why not."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise InvalidJson("nested too deeply") from None
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise InvalidJson(str(exc).splitlines()[0][:200]) from None
    if _SURROGATE_ESCAPE.search(raw):
        try:  # pairs (an escaped emoji) encode; a lone half does not
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidJson("a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)") from None
        except RecursionError:
            raise InvalidJson("nested too deeply") from None
    return value
