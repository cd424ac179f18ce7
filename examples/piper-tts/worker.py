"""The piper-tts worker: a Piper voice behind OpenAI's POST /v1/audio/speech (quart-trio).

Environment:
  FLOWCTL_PORT   port to listen on (0: any free port; default 8000)
  FLOWCTL_HOST   address to bind (default 127.0.0.1)
  MODELS_DIR     where the .onnx voice named in service.json (and its .onnx.json) is
                 (default: models/ beside this file)
  PIPER_CUDA     1: run the voice on onnxruntime's CUDA provider (default 0)

It loads the voice first, then listens and prints `piper-tts worker listening on
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
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

GRACEFUL_TIMEOUT_S = 5.0
DEFAULT_PORT = 8000
HERE = Path(__file__).resolve().parent
DEFAULT_MODELS = ("piper-joe",)  # what the shipped service.json says
DEFAULT_VOICE = "models/en_US-joe-medium.onnx"


class BadSetting(Exception):
    """An environment variable or service.json value the worker cannot use."""


class VoiceUnavailable(Exception):
    """The voice files are missing or onnxruntime cannot load them."""


@dataclass(frozen=True)
class WorkerSettings:
    """Everything the worker reads from its environment and its service.json."""

    host: str
    port: int
    models: tuple[str, ...]
    voice_path: Path
    cuda: bool


def load_settings(manifest: Path = HERE / "service.json") -> WorkerSettings:
    """Read the environment and service.json (if present); BadSetting names what is wrong."""
    models, voice = DEFAULT_MODELS, DEFAULT_VOICE
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text())
            models = tuple(m["model_id"] for m in data["models"] if m["model_type"] == "tts")
            voice = next(m["path"] for m in data["models"] if m["path"].endswith(".onnx"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, StopIteration) as exc:
            raise BadSetting(f"{manifest} does not name a tts model with an .onnx voice ({exc!r})") from None
    raw_port = os.environ.get("FLOWCTL_PORT") or str(DEFAULT_PORT)
    try:
        port = int(raw_port)
    except ValueError:
        raise BadSetting(f"FLOWCTL_PORT={raw_port!r} is not an integer") from None
    if not 0 <= port <= 65535:
        raise BadSetting(f"FLOWCTL_PORT={port} is not a port (0-65535)")
    cuda = os.environ.get("PIPER_CUDA") or "0"
    if cuda not in ("0", "1"):
        raise BadSetting(f"PIPER_CUDA={cuda!r} is not 0 or 1")
    models_dir = Path(os.environ.get("MODELS_DIR") or HERE / "models")
    return WorkerSettings(host=os.environ.get("FLOWCTL_HOST", "127.0.0.1"), port=port, models=models,
                          voice_path=models_dir / Path(voice).name, cuda=cuda == "1")


def load_voice(settings: WorkerSettings) -> Any:
    """The Piper voice (piper.PiperVoice); VoiceUnavailable says why not."""
    config = settings.voice_path.with_name(settings.voice_path.name + ".json")
    for path in (settings.voice_path, config):
        if not path.is_file():
            raise VoiceUnavailable(f"{path} is missing (run `python model_package.py` beside worker.py, "
                                   "or `just speech-models`)")
    from piper import PiperVoice

    try:
        return PiperVoice.load(settings.voice_path, config_path=config, use_cuda=settings.cuda)
    except Exception as exc:  # onnxruntime raises its own types; any of them means the same
        raise VoiceUnavailable(f"cannot load {settings.voice_path}: {exc}") from None


async def run_worker(settings: WorkerSettings) -> None:
    """Load the voice, serve until SIGTERM or SIGINT."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        voice = await trio.to_thread.run_sync(load_voice, settings)
        from tts_app import create_app
        from tts_engine import TtsEngine

        name = settings.voice_path.name.removesuffix(".onnx")  # en_US-joe-medium
        voices = frozenset({name, name.split("-")[1]})  # and "joe"
        app = create_app(TtsEngine(voice), settings.models, voices)
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
            print(f"piper-tts worker listening on {binds[0]} (voice {name}, "
                  f"{voice.config.sample_rate} Hz)", flush=True)


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


def main() -> int:
    """Run the worker; exit 2 on a bad setting, 1 when the voice or the port is unusable."""
    try:
        settings = load_settings()
    except BadSetting as exc:
        print(f"piper-tts worker: {exc}", file=sys.stderr)
        return 2
    failure: BaseException | None = None
    try:
        trio.run(run_worker, settings)
    except* VoiceUnavailable as group:
        failure = _first_leaf(group)
    except* OSError as group:
        leaf = _first_leaf(group)
        failure = OSError(f"cannot listen on {settings.host}:{settings.port}: "
                          f"{getattr(leaf, 'strerror', None) or leaf}")
    if failure is not None:
        print(f"piper-tts worker: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
