"""Real bundles for hub tests, made by the packer (`pack_dir`)."""

from __future__ import annotations

import json
from pathlib import Path


def make_bundle(tmp: Path, version: str = "1.0.0", *, service_id: str = "echo",
                files: dict[str, bytes] | None = None, models: list[dict] | None = None,
                signing_key: Path | None = None, port: int | None = 5008):
    """Pack a small service into tmp/dist; returns the packer's PackResult.

    `port` is service.json's declared port (the seed's shape); None declares none, so the
    node assigns one and several replicas can share a node.
    """
    from packer import pack_dir

    src = tmp / f"src-{service_id}-{version}"
    src.mkdir(parents=True)
    files = files if files is not None else {
        "worker.py": b"print('echo')\n",
        "models/echo-model/weights.bin": b"W" * 5000,
        "models/echo-model/config.json": b'{"dim": 4}\n',
    }
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    if models is None:
        models = [{"model_id": "echo-model", "model_type": "chat", "version": "1.0.0",
                   "path": "models/echo-model"}] if "models/echo-model/weights.bin" in files else []
    manifest = {"service_id": service_id, "service_name": "Echo", "version": version,
                "service_type": "python", "startup_command": "python worker.py",
                "models": models, "created_at": "2025-12-17T00:00:00Z"}
    if port is not None:
        manifest["port"] = port
    (src / "service.json").write_text(json.dumps(manifest))
    return pack_dir(src, tmp / "dist", signing_key=signing_key)
