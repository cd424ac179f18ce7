"""All terminal output goes through here: one rich Console for stdout, one for stderr.

`out` and `err` are created on first use (PEP 562): importing rich costs ~40 ms,
which `flowctl pack` piped into a script does not need (it prints with `echo`).
"""

from __future__ import annotations

import json
import sys
from typing import Any

_consoles: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    if name in ("out", "err"):
        return _console(name)
    raise AttributeError(f"module 'flowctl.console' has no attribute {name!r}")


def _console(name: str) -> Any:
    if name not in _consoles:
        from rich.console import Console

        _consoles[name] = Console(stderr=name == "err", highlight=False, soft_wrap=True)
    return _consoles[name]


def printable(text: str) -> str:
    """`text` with control characters (terminal escapes included) shown as '?': for untrusted strings."""
    return "".join(c if c.isprintable() or c == " " else "?" for c in text)


def echo(line: str) -> None:
    """Write one plain line to stdout (no markup, no rich import)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def print_json(data: Any) -> None:
    """Write `data` as JSON to stdout, unstyled, for scripts."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str) -> None:
    """Print a one-line error to stderr (no traceback)."""
    from rich.text import Text

    _console("err").print(Text.assemble(("error: ", "bold red"), message))


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def progress_enabled() -> bool:
    """Progress bars only on a terminal; quiet when piped."""
    return sys.stderr.isatty() and _console("err").is_terminal


class _NoProgress:
    def __enter__(self):
        return lambda n: None

    def __exit__(self, *exc: object) -> None:
        return None


class _ByteProgress:
    """A rich progress bar (bytes, rate, ETA) on stderr; entering it gives `advance(n)`."""

    def __init__(self, total: int, description: str):
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                  TransferSpeedColumn(), TimeRemainingColumn(), console=_console("err"),
                                  transient=True)
        self._task = self._progress.add_task(description, total=total)

    def __enter__(self):
        self._progress.start()
        return lambda n: self._progress.advance(self._task, n)

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


def byte_progress(total: int, description: str):
    """A context manager yielding `advance(nbytes)`: a progress bar on a terminal, else a no-op."""
    if not progress_enabled() or total <= 0:
        return _NoProgress()
    return _ByteProgress(total, description)
