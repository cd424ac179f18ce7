"""Canonical JSON: the one byte form of a manifest (what a signature covers)."""

from __future__ import annotations

import json
from typing import Any


def canonical_json(data: Any) -> bytes:
    """Serialize deterministically: sorted keys, 2-space indent, UTF-8, final newline.

    Byte-identical to `json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"`,
    which with an indent runs json's pure-Python encoder (~50 us per file entry); this
    writer is several times faster on manifests with many files.
    """
    out: list[str] = []
    _canonical(data, "\n", out)
    out.append("\n")
    return "".join(out).encode()


_encode_str = json.encoder.encode_basestring  # the C version when available


def _canonical(value: Any, newline: str, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(_encode_str(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{value!r} has no canonical JSON form")
        out.append(float.__repr__(value))
    elif isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        inner = newline + "  "
        out.append("{")
        first = True
        for key, item in sorted(value.items()):
            if not isinstance(key, str):
                raise TypeError(f"canonical JSON keys must be strings, not {type(key).__name__}")
            out.append(inner if first else "," + inner)
            first = False
            out.append(_encode_str(key))
            out.append(": ")
            _canonical(item, inner, out)
        out.append(newline + "}")
    elif isinstance(value, list | tuple):
        if not value:
            out.append("[]")
            return
        inner = newline + "  "
        out.append("[")
        for i, item in enumerate(value):
            out.append("," + inner if i else inner)
            _canonical(item, inner, out)
        out.append(newline + "]")
    else:
        raise TypeError(f"{type(value).__name__} is not JSON serializable")
