"""The dispatcher is the only code that opens a tunnel stream for a model request (issue 13)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
ALLOWED = {"runtime/dispatch/dispatcher.py"}
TUNNEL_OPENERS = {"send_request", "open_stream"}


def _uses(path: Path) -> set[str]:
    """Names of the tunnel's stream openers that `path` imports or calls as attributes."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("runtime.tunnel"):
            found |= {alias.name for alias in node.names} & TUNNEL_OPENERS
        elif isinstance(node, ast.Attribute) and node.attr in TUNNEL_OPENERS and isinstance(node.ctx, ast.Load):
            found.add(node.attr)
    return found


def test_no_caller_outside_the_dispatcher_opens_a_tunnel_stream():
    offenders = {}
    for package in ("runtime", "flowctl"):
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("runtime/tunnel/") or rel in ALLOWED:
                continue
            if used := _uses(path):
                offenders[rel] = sorted(used)
    assert not offenders, f"model requests must go through runtime/dispatch: {offenders}"


def test_the_guard_sees_a_hand_made_path(tmp_path):
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("from runtime.tunnel.http import send_request\n")
    assert _uses(sneaky) == {"send_request"}
    other = tmp_path / "other.py"
    other.write_text("async def f(link):\n    return await link.mux.open_stream({})\n")
    assert _uses(other) == {"open_stream"}
