"""runtime.api's public names, and the peers that share it: no role imports another for it."""

import ast
from pathlib import Path

import runtime.api

PUBLIC = {"ERROR_SCHEMA", "ApiError", "bearer_ok", "ensure_admin_key", "error_body", "error_response", "hash_key", "json_response"}
RUNTIME = Path(runtime.api.__file__).parents[1]


def test_public_names() -> None:
    assert set(runtime.api.__all__) == PUBLIC
    for name in PUBLIC - {"ERROR_SCHEMA"}:
        assert getattr(runtime.api, name).__doc__, f"{name} has no docstring"


def _imports(package: str) -> set[str]:
    found = set()
    for path in (RUNTIME / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return found


def test_the_scheduler_and_the_gateway_import_nothing_of_the_hub() -> None:
    for package in ("scheduler", "gateway"):
        assert not {m for m in _imports(package) if m == "runtime.hub" or m.startswith("runtime.hub.")}, package
