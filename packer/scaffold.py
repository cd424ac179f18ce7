"""A service.json for a directory that has none (seed 001's pack script generates one).

`draft_manifest` turns the fields the user gave into service.json bytes, validated exactly
as `flowctl pack` will read them; `write_new_manifest` puts them in place atomically and
never over an existing file, so a refused or interrupted run leaves no half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from packer.errors import ManifestError
from packer.manifest import MANIFEST_NAME, MODEL_TYPES, parse_source_manifest

# Entry points tried, in order, when a Python service has several top-level scripts.
_PYTHON_ENTRY_POINTS = ("main.py", "app.py", "server.py", "service.py", "worker.py")


def guess_startup_command(src: Path, service_type: str) -> str | None:
    """`python X.py` for a Python service whose entry point is clear, `./run.sh` for a run.sh; else None."""
    src = Path(src)
    run = src / "run.sh"
    if run.is_file() and os.access(run, os.X_OK):
        return "./run.sh"
    if service_type != "python":
        return None
    scripts = sorted(p.name for p in src.glob("*.py") if p.is_file() and not p.name.startswith(("_", "test_")))
    if len(scripts) == 1:
        return f"python {scripts[0]}"
    for name in _PYTHON_ENTRY_POINTS:
        if name in scripts:
            return f"python {name}"
    services = [s for s in scripts if s.endswith("_service.py")]
    return f"python {services[0]}" if len(services) == 1 else None


def parse_model_option(text: str) -> dict[str, str]:
    """`ID:TYPE[:PATH]` (as `--model` takes it) -> a service.json models[] item."""
    parts = text.split(":", 2)
    if len(parts) < 2 or not parts[0] or parts[1] not in MODEL_TYPES:
        raise ManifestError(f"{text!r} is not ID:TYPE[:PATH] with TYPE one of {', '.join(MODEL_TYPES)}",
                            source="--model")
    item = {"model_id": parts[0], "model_type": parts[1]}
    if len(parts) == 3 and parts[2]:
        item["path"] = parts[2]
    return item


def draft_manifest(fields: dict[str, Any]) -> bytes:
    """service.json bytes from `fields` (None values left out), validated; ManifestError if invalid."""
    data = {k: v for k, v in fields.items() if v is not None and v != "" and v != []}
    raw = (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()
    parse_source_manifest(raw, source=f"the generated {MANIFEST_NAME}")
    return raw


def write_new_manifest(src: Path, raw: bytes) -> Path:
    """Create SRC/service.json with `raw`, atomically; FileExistsError if one appeared meanwhile."""
    final = Path(src) / MANIFEST_NAME
    fd, tmp_name = tempfile.mkstemp(dir=src, prefix=f".{MANIFEST_NAME}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp_name, 0o644)
        os.link(tmp_name, final)  # unlike rename, never replaces a file that is there
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return final
