import json
import os
from pathlib import Path

import pytest

SERVICE = {
    "service_id": "echo",
    "service_name": "Echo",
    "version": "1.0.0",
    "service_type": "python",
    "port": 5008,
    "models": [{"model_id": "echo-1", "model_type": "chat", "version": "1.0.0", "path": "worker.py"}],
    "startup_command": "python worker.py",
    "created_at": "2025-12-17T00:00:00Z",
}


def write_source(root: Path, files: dict[str, bytes] | None = None, **service) -> Path:
    """A service directory: service.json plus `files` (default: a worker, a script, some data)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "service.json").write_text(json.dumps({**SERVICE, **service}))
    if files is None:
        files = {"worker.py": b"print('echo')\n", "run.sh": b"#!/bin/sh\nexec python worker.py\n",
                 "lib/util.py": b"X = 1\n" * 100, "models/weights.bin": os.urandom(300_000)}
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if (root / "run.sh").exists():
        (root / "run.sh").chmod(0o755)
    return root


@pytest.fixture
def source(tmp_path):
    """A small service directory."""
    return write_source(tmp_path / "src")


@pytest.fixture(autouse=True)
def _no_source_date_epoch(monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
