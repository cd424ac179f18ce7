"""`.flowctlignore`: gitignore-style globs that keep files out of a bundle.

Supported: `#` comments, blank lines, `!` to re-include, a trailing `/` for
directories only, a leading or inner `/` to anchor a pattern at the bundle root,
`*`, `?`, `[...]` and `**`. The last matching line wins; as in git, a file under
an ignored directory cannot be re-included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packer.errors import PackerError

IGNORE_FILE = ".flowctlignore"
DEFAULT_PATTERNS = (".git/", "__pycache__/", "*.pyc", ".DS_Store")


@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool


def _translate(glob: str) -> str:
    out: list[str] = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        if glob.startswith("**", i):
            before_ok = i == 0 or glob[i - 1] == "/"
            after = glob[i + 2:i + 3]
            if before_ok and after == "/":
                out.append("(?:.*/)?")
                i += 3
                continue
            if before_ok and after == "":
                out.append(".*")
                i += 2
                continue
            out.append("[^/]*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            close = glob.find("]", i + 2 if glob[i + 1:i + 2] in ("!", "^") else i + 1)
            if close < 0:
                out.append(re.escape(c))
                i += 1
                continue
            inner = glob[i + 1:close]
            if inner[:1] in ("!", "^"):
                inner = "^" + inner[1:]
            out.append("[" + inner.replace("\\", "\\\\") + "]")
            i = close + 1
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(glob[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def _compile(line: str) -> _Rule | None:
    line = line.rstrip("\n").rstrip("\r")
    if not line.endswith("\\ "):
        line = line.rstrip(" ")
    if not line or line.startswith("#"):
        return None
    negate = line.startswith("!")
    if negate:
        line = line[1:]
    elif line.startswith("\\"):
        line = line[1:]
    dir_only = line.endswith("/")
    line = line.rstrip("/")
    if not line:
        return None
    anchored = "/" in line
    line = line.lstrip("/")
    body = _translate(line)
    regex = "^" + body + "$" if anchored else "^(?:.*/)?" + body + "$"
    return _Rule(re.compile(regex, re.DOTALL), negate, dir_only)


class IgnoreRules:
    """Decides whether a path (relative, '/'-separated) is left out of the bundle."""

    def __init__(self, lines: list[str] | tuple[str, ...]) -> None:
        self._rules = [rule for line in lines if (rule := _compile(line)) is not None]

    @classmethod
    def for_source(cls, src: Path) -> IgnoreRules:
        """The defaults followed by the lines of SRC/.flowctlignore, if any."""
        lines = list(DEFAULT_PATTERNS)
        path = src / IGNORE_FILE
        if path.is_file():
            try:
                lines += path.read_bytes().decode("utf-8").splitlines()
            except UnicodeDecodeError:
                raise PackerError(f"{str(path)!r} is not valid UTF-8") from None
        return cls(lines)

    def ignored(self, path: str, *, is_dir: bool) -> bool:
        """True when the last rule matching `path` excludes it."""
        result = False
        for rule in self._rules:
            if rule.dir_only and not is_dir:
                continue
            if rule.regex.match(path):
                result = not rule.negate
        return result
