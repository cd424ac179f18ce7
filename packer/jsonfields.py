"""Strict JSON for service.json: no duplicate keys, no NaN, and typed field access whose
errors name the field (`service.json: port 70000 is out of range (1..65535)`)."""

from __future__ import annotations

import builtins
import json
import re
from typing import Any

from packer.errors import ManifestError

DEFAULT_SOURCE = "service.json"  # the file these errors are about, unless told otherwise


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise ManifestError(f"duplicate key {key!r}")
        data[key] = value
    return data


def loads_json(raw: bytes, *, source: str = DEFAULT_SOURCE) -> Any:
    """Parse JSON strictly (UTF-8, no duplicate keys, no NaN); errors are ManifestError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError("is not valid UTF-8", source=source) from None
    try:
        return json.loads(
            text,
            object_pairs_hook=_reject_duplicate_keys,
            parse_constant=lambda c: _raise(ManifestError(f"{c} is not allowed", source=source)),
        )
    except json.JSONDecodeError as exc:
        raise ManifestError(f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
                            source=source) from None
    except ManifestError as exc:
        raise ManifestError(exc.problem, field=exc.field, source=source) from None


def _raise(exc: Exception) -> Any:
    raise exc


class _Fields:
    """Typed access to a JSON object, raising ManifestError that names the field."""

    def __init__(self, data: Any, prefix: str, source: str):
        if not isinstance(data, dict):
            raise ManifestError(f"must be an object, not {type(data).__name__}",
                                field=prefix or None, source=source)
        self.data = data
        self.prefix = prefix
        self.source = source

    def name(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def error(self, key: str, problem: str) -> ManifestError:
        return ManifestError(problem, field=self.name(key), source=self.source)

    def str(self, key: str, default: str | None = None, *, pattern: re.Pattern | None = None,
            choices: tuple[str, ...] | None = None, max_len: int = 4096) -> str:
        if key not in self.data:
            if default is None:
                raise self.error(key, "is required")
            return default
        value = self.data[key]
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, not {type(value).__name__}")
        if len(value) > max_len:
            raise self.error(key, f"is longer than {max_len} characters")
        if "\x00" in value:
            raise self.error(key, "contains a NUL character")
        if pattern is not None and not pattern.match(value):
            raise self.error(key, f"{value!r} does not match {pattern.pattern}")
        if choices is not None and value not in choices:
            raise self.error(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def int(self, key: builtins.str, default: int | None = None, *, lo: int = 0, hi: int = 2**63 - 1) -> int:
        if key not in self.data:
            if default is None:
                raise self.error(key, "is required")
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, not {type(value).__name__}")
        if not lo <= value <= hi:
            raise self.error(key, f"{value} is out of range ({lo}..{hi})")
        return value

    def number(self, key: builtins.str, default: float) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 86400:
            raise self.error(key, f"{value!r} must be a number of seconds in (0, 86400]")
        return float(value)

    def list(self, key: builtins.str) -> list[Any]:
        value = self.data.get(key, [])
        if not isinstance(value, list):
            raise self.error(key, f"must be a list, not {type(value).__name__}")
        return value

    def unknown(self, allowed: set[builtins.str]) -> None:
        extra = sorted(set(self.data) - allowed)
        if extra:
            raise ManifestError(f"unknown field {extra[0]!r} (allowed: {', '.join(sorted(allowed))})",
                                field=self.prefix or None, source=self.source)
