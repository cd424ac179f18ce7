"""Reading one field of a job definition: its type, range or format checked, and each
problem noted with its field path (`policies.retries.max_attempts: must be at least 1`)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any, TypeVar, cast

T = TypeVar("T")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION_S = 366 * 86400.0
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TYPE_WORDS = {"str": "a string", "int": "an integer", "dict": "a table", "list": "a list",
               "bool": "true or false", "int or float": "a number"}


class Problems(list[str]):
    """Every problem found in one definition, as `field.path: what is wrong`."""

    def add(self, path: str, message: str) -> None:
        """Note that the field at `path` is wrong."""
        self.append(f"{path}: {message}")


def known(table: dict[str, Any], path: str, allowed: set[str], p: Problems) -> None:
    """Note every key of `table` that is not in `allowed`."""
    for key in table:
        if key not in allowed:
            p.add(f"{path}{key}" if path else str(key), f"unknown field (expected one of {', '.join(sorted(allowed))})")


def typed(value: object, kind: type[T] | tuple[type, ...], path: str, p: Problems) -> T | None:
    """`value` if it is of `kind`, else None and a problem."""
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        p.add(path, f"expected a number, got {value!r}")
        return None
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        p.add(path, f"expected {_TYPE_WORDS.get(names, names)}, got {value!r}")
        return None
    return cast(T, value)



def ident(value: object, path: str, p: Problems) -> str | None:
    """A required name (job, tenant, step, parameter): 1-63 letters, digits, '.', '_', '-'."""
    if value is None:
        p.add(path, "required")
        return None
    text = typed(value, str, path, p)
    if text is not None and not NAME.match(text):
        p.add(path, f"{text!r} must be 1-63 letters, digits, '.', '_' or '-'")
        return None
    return text


def duration(value: object, path: str, p: Problems, *, minimum: float = 0.001,
             maximum: float = MAX_DURATION_S) -> float | None:
    """Seconds, from a number or a string like '90s', '15m', '2h', '1d'."""
    if isinstance(value, str) and (m := _DURATION.match(value.strip())):
        seconds = float(m[1]) * _UNITS[m[2]]
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        p.add(path, f"expected seconds or a duration like '90s', '15m', '2h', got {value!r}")
        return None
    if not minimum <= seconds <= maximum:  # NaN included
        p.add(path, f"must be from {minimum:g} s to {maximum:g} s, got {value!r}")
        return None
    return seconds


def integer(value: object, path: str, p: Problems, *, minimum: int, maximum: int = 1_000_000) -> int | None:
    """An integer from `minimum` to `maximum`."""
    number = typed(value, int, path, p)
    if number is not None and not minimum <= number <= maximum:
        p.add(path, f"must be from {minimum} to {maximum}, got {number!r}")
        return None
    return number


def choice(value: object, path: str, choices: tuple[str, ...], p: Problems) -> str | None:
    """One of `choices`."""
    if value not in choices:
        p.add(path, f"expected one of {', '.join(choices)}, got {value!r}")
        return None
    return cast(str, value)


def string_map(value: object, path: str, p: Problems) -> tuple[tuple[str, str], ...]:
    """A table of strings, as sorted pairs."""
    table = typed(value, dict, path, p)
    if table is None:
        return ()
    for key, item in table.items():
        typed(item, str, f"{path}.{key}", p)
    return tuple(sorted((str(k), v) for k, v in table.items() if isinstance(v, str)))


def env_map(value: object, path: str, p: Problems) -> tuple[tuple[str, str], ...]:
    """Environment variables: names a shell accepts, none of flowctl's own (FLOWCTL_*)."""
    pairs = string_map(value, path, p)
    for key, item in pairs:
        if not _ENV_NAME.match(key) or key.startswith("FLOWCTL_"):
            p.add(f"{path}.{key}", "not a variable name a step may set (letters, digits, _; not FLOWCTL_*)")
        elif "\0" in item:
            p.add(f"{path}.{key}", "contains a NUL character")
    return pairs


def table(value: object, path: str, allowed: set[str], p: Problems) -> dict[str, Any]:
    """A table with only the `allowed` keys."""
    table = typed(value, dict, path, p)
    if table is None:
        return {}
    known(table, f"{path}.", allowed, p)
    return table


def optional(table: dict[str, Any], key: str, parse: Callable[[object, str], T | None],
         path: str, default: T) -> T:
    """`table[key]` read by `parse`, or `default` when absent or wrong."""
    if key not in table:
        return default
    value = parse(table[key], f"{path}.{key}")
    return default if value is None else value


def instant(value: object, path: str, p: Problems) -> int | None:
    """Epoch seconds from a time with an offset (ISO 8601 string, or a TOML/YAML datetime)."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            p.add(path, f"expected an ISO 8601 time with an offset, got {value!r}")
            return None
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        p.add(path, f"expected a time with an offset (e.g. 2027-01-01T09:00:00+01:00), got {value!r}")
        return None
    return int(value.timestamp())
