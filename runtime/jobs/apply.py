"""Applying definition files: load a file or a directory, validate every job before any is
applied (nothing half-applied), and describe what applying would change (`--dry-run`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.jobs.errors import JobDefinitionError
from runtime.jobs.model import JobSpec
from runtime.jobs.schema import load_job_file
from runtime.jobs.store import RunStore

SUFFIXES = (".toml", ".yaml", ".yml")
MAX_FILES = 10_000  # the spec's fleet applied at once (one transaction)
MAX_APPLY_BYTES = 16 << 20  # 10,000 definitions of a few hundred bytes each, with room
APPLY_PATH = "/api/v1/jobs/apply"


@dataclass(frozen=True)
class Change:
    """What applying one definition does: create, update (with the fields that change) or nothing."""

    tenant: str
    name: str
    action: str  # "create" | "update" | "unchanged"
    fields: tuple[str, ...] = ()  # "trigger.cron: '0 3 * * *' -> '30 2 * * *'"


def load_definitions(path: Path, *, tenant: str | None = None) -> list[JobSpec]:
    """Every job in a file, or in the directory's .toml/.yaml/.yml files (not recursive).

    Error handling: one JobDefinitionError listing every file's problems, and names defined
    twice, so a directory is applied whole or not at all.
    """
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
        if not files:
            raise JobDefinitionError([f"no {', '.join(SUFFIXES)} files"], source=str(path))
        if len(files) > MAX_FILES:
            raise JobDefinitionError([f"{len(files)} files; at most {MAX_FILES} at once"], source=str(path))
    else:
        files = [path]
    specs: list[JobSpec] = []
    problems: list[str] = []
    seen: dict[tuple[str, str], Path] = {}
    for file in files:
        try:
            spec = load_job_file(file, tenant=tenant)
        except JobDefinitionError as e:
            problems.append(str(e))
            continue
        key = (spec.tenant, spec.name)
        if key in seen:
            problems.append(f"{file}: name: job {spec.name!r} is also defined in {seen[key]}")
            continue
        seen[key] = file
        specs.append(spec)
    if problems:
        raise JobDefinitionError(problems)
    return specs


def plan_changes(store: RunStore, specs: list[JobSpec]) -> list[Change]:
    """What applying `specs` would do, field by field, without doing it."""
    changes = []
    stored = store.documents((spec.tenant, spec.name) for spec in specs)
    for spec in specs:
        document = stored.get((spec.tenant, spec.name))
        if document is None:
            changes.append(Change(spec.tenant, spec.name, "create"))
            continue
        if document == spec.document:
            changes.append(Change(spec.tenant, spec.name, "unchanged"))
            continue
        before, after = _flatten(json.loads(document)), _flatten(json.loads(spec.document))
        fields = tuple(f"{key}: {before.get(key, '(unset)')!r} -> {after.get(key, '(unset)')!r}"
                       .replace("'(unset)'", "(unset)")
                       for key in sorted(before.keys() | after.keys()) if before.get(key) != after.get(key))
        changes.append(Change(spec.tenant, spec.name, "update" if fields else "unchanged", fields))
    return changes


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        out = {}
        for i, item in enumerate(value):
            out.update(_flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def raise_apply_cap(app: Any) -> None:
    """quart fixes a request's body cap when it builds the request: an apply of a whole fleet's
    definitions may be up to MAX_APPLY_BYTES; every other route keeps the app's cap."""
    base = app.request_class

    class ApplyRequest(base):  # type: ignore[misc, valid-type]  # mypy cannot follow a variable base
        def __init__(self, method: str, scheme: str, path: str, *args: Any, **kwargs: Any) -> None:
            if method == "POST" and path == APPLY_PATH:
                kwargs["max_content_length"] = MAX_APPLY_BYTES
            super().__init__(method, scheme, path, *args, **kwargs)

    app.request_class = ApplyRequest
