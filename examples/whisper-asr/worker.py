"""The whisper-asr worker: Whisper base on faster-whisper behind OpenAI's audio routes (quart-trio).

Environment:
  FLOWCTL_PORT          port to listen on (0: any free port; default 8000)
  FLOWCTL_HOST          address to bind (default 127.0.0.1)
  MODELS_DIR            where the model directory named in service.json is (default: models/
                        beside this file)
  WHISPER_THREADS       CPU threads for CTranslate2 (default: os.cpu_count())
  WHISPER_DEVICE        cpu, cuda or auto (default auto: cuda when CTranslate2 sees a GPU)
  WHISPER_COMPUTE_TYPE  CTranslate2 compute type (default int8 on the CPU, float16 on a GPU)
  WHISPER_BEAM_SIZE     beam width (default 5)
  ASR_MAX_UPLOAD_MB     largest upload accepted, in MiB (default 25, OpenAI's limit): larger is 413
  ASR_MAX_AUDIO_S       longest audio accepted, in seconds (default 300): longer is 400
  OMP_WAIT_POLICY       how CTranslate2's OpenMP threads wait at a barrier (default here PASSIVE:
                        sleep; libgomp's own default spins, which on a busy machine burned 5-6x the
                        CPU of the work itself: see docs/speech.md, Performance)

It loads the model first, then listens and prints `whisper-asr worker listening on
http://HOST:PORT` on stdout. SIGTERM or SIGINT: stop accepting, let running requests
finish for up to GRACEFUL_TIMEOUT_S (then cancel them), exit 0.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

GRACEFUL_TIMEOUT_S = 5.0
DEFAULT_PORT = 8000
HERE = Path(__file__).resolve().parent
DEFAULT_MODELS = ("whisper-base",)  # what the shipped service.json says
DEFAULT_MODEL_DIR = "models/whisper-base"
# OpenMP threads that sleep at a barrier instead of spinning: a spinning thread holds a core the
# thread it waits for needs, so on a loaded machine most of the CPU went to waiting.
OMP_WAIT_POLICY = "PASSIVE"


class BadSetting(Exception):
    """An environment variable or service.json value the worker cannot use."""


class ModelUnavailable(Exception):
    """The model directory is missing or CTranslate2 cannot load it."""


@dataclass(frozen=True)
class WorkerSettings:
    """Everything the worker reads from its environment and its service.json."""

    host: str
    port: int
    models: tuple[str, ...]
    model_dir: Path
    threads: int
    device: str
    compute_type: str | None
    beam_size: int
    max_upload: int
    max_seconds: float


def _env_number(name: str, default: float, lo: float, kind: type = int) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise BadSetting(f"{name}={raw!r} is not {'an integer' if kind is int else 'a number'}") from None
    if value < lo:
        raise BadSetting(f"{name}={value} is below {lo}")
    return value


def load_settings(manifest: Path = HERE / "service.json") -> WorkerSettings:
    """Read the environment and service.json (if present); BadSetting names what is wrong."""
    models, model_path = DEFAULT_MODELS, DEFAULT_MODEL_DIR
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text())
            models = tuple(m["model_id"] for m in data["models"] if m["model_type"] == "asr")
            model_path = next(m["path"] for m in data["models"] if m["model_type"] == "asr")
        except (OSError, ValueError, KeyError, TypeError, StopIteration) as exc:
            raise BadSetting(f"{manifest} does not name an asr model ({exc!r})") from None
    models_dir = Path(os.environ.get("MODELS_DIR") or HERE / "models")
    port = int(_env_number("FLOWCTL_PORT", DEFAULT_PORT, 0))
    if port > 65535:
        raise BadSetting(f"FLOWCTL_PORT={port} is above 65535")
    device = os.environ.get("WHISPER_DEVICE") or "auto"
    if device not in ("auto", "cpu", "cuda"):
        raise BadSetting(f"WHISPER_DEVICE={device!r} is not auto, cpu or cuda")
    return WorkerSettings(
        host=os.environ.get("FLOWCTL_HOST", "127.0.0.1"), port=port, models=models,
        model_dir=models_dir / Path(model_path).name,
        threads=int(_env_number("WHISPER_THREADS", os.cpu_count() or 1, 1)), device=device,
        compute_type=os.environ.get("WHISPER_COMPUTE_TYPE") or None,
        beam_size=int(_env_number("WHISPER_BEAM_SIZE", 5, 1)),
        max_upload=int(_env_number("ASR_MAX_UPLOAD_MB", 25, 0.001, float) * 2**20),
        max_seconds=_env_number("ASR_MAX_AUDIO_S", 300, 1, float))


def load_model(settings: WorkerSettings):  # -> faster_whisper.WhisperModel
    """The model on the chosen device; ModelUnavailable says why not."""
    if not (settings.model_dir / "model.bin").is_file():
        raise ModelUnavailable(f"{settings.model_dir}/model.bin is missing (run "
                               "`python model_package.py` beside worker.py, or `just speech-models`)")
    import ctranslate2
    from faster_whisper import WhisperModel

    device = settings.device
    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    compute = settings.compute_type or ("float16" if device == "cuda" else "int8")
    try:
        model = WhisperModel(str(settings.model_dir), device=device, compute_type=compute,
                             cpu_threads=settings.threads, local_files_only=True)
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelUnavailable(f"cannot load {settings.model_dir} on {device} ({compute}): {exc}") from None
    return model, device


async def run_worker(settings: WorkerSettings) -> None:
    """Load the model, serve until SIGTERM or SIGINT."""
    # Installed before the (slow) load so that a SIGTERM during it is a clean stop.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        model, device = await trio.to_thread.run_sync(load_model, settings)
        from asr_app import create_app
        from asr_engine import AsrEngine
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        app = create_app(AsrEngine(model, beam_size=settings.beam_size), settings.models, device=device,
                         max_upload=settings.max_upload, max_seconds=settings.max_seconds,
                         languages=frozenset(_LANGUAGE_CODES))
        config = Config()
        config.bind = [f"{settings.host}:{settings.port}"]
        config.accesslog = None
        config.loglevel = "WARNING"
        config.graceful_timeout = GRACEFUL_TIMEOUT_S

        async def shutdown_trigger() -> None:
            async for _ in signals:
                return

        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(serve, app, config, shutdown_trigger=shutdown_trigger))
            print(f"whisper-asr worker listening on {binds[0]} (model {settings.model_dir.name}, "
                  f"{device}, {settings.threads} threads)", flush=True)


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


def main() -> int:
    """Run the worker; exit 2 on a bad setting, 1 when the model or the port is unusable."""
    # Read by libgomp when CTranslate2 loads, so it must be set before the first import.
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    try:
        settings = load_settings()
    except BadSetting as exc:
        print(f"whisper-asr worker: {exc}", file=sys.stderr)
        return 2
    failure: BaseException | None = None
    try:
        trio.run(run_worker, settings)
    except* ModelUnavailable as group:
        failure = _first_leaf(group)
    except* OSError as group:
        leaf = _first_leaf(group)
        failure = OSError(f"cannot listen on {settings.host}:{settings.port}: "
                          f"{getattr(leaf, 'strerror', None) or leaf}")
    if failure is not None:
        print(f"whisper-asr worker: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
