"""The llama-chat worker: Gemma 3 270M on llama-cpp-python behind OpenAI routes (quart-trio).

Environment:
  FLOWCTL_PORT        port to listen on (0: any free port; default 8000)
  FLOWCTL_HOST        address to bind (default 127.0.0.1)
  MODELS_DIR          where the GGUF named in service.json is (default: models/ beside this file;
                      without a service.json, the names of the shipped one are used)
  LLAMA_N_THREADS     CPU threads for llama.cpp (default: os.cpu_count())
  LLAMA_N_CTX         context window in tokens (default 4096)
  LLAMA_N_GPU_LAYERS  layers to offload (default: all when the build supports a GPU, else 0)

It loads the model first, then listens and prints `llama-chat worker listening on
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
from llama_backend import DEFAULT_N_CTX, BackendUnavailable, LlamaBackend, LlamaSettings
from llama_engine import Engine

GRACEFUL_TIMEOUT_S = 5.0
DEFAULT_PORT = 8000
HERE = Path(__file__).resolve().parent
# What the shipped service.json says, for an install that did not keep service.json.
DEFAULT_MODELS = ("gemma-3-270m", "gemma-3-270m-embedding")
DEFAULT_GGUF = "models/gemma-3-270m-q4_k_m.gguf"


class BadSetting(Exception):
    """An environment variable or service.json value the worker cannot use."""


@dataclass(frozen=True)
class WorkerSettings:
    """Everything the worker reads from its environment and its service.json."""

    host: str
    port: int
    models: tuple[str, ...]
    llama: LlamaSettings


def _env_int(name: str, default: int | None, lo: int) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadSetting(f"{name}={raw!r} is not an integer") from None
    if value < lo:
        raise BadSetting(f"{name}={value} is below {lo}")
    return value


def load_settings(manifest: Path = HERE / "service.json") -> WorkerSettings:
    """Read the environment and service.json (if present); BadSetting names what is wrong."""
    models, gguf = DEFAULT_MODELS, DEFAULT_GGUF
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text())
            models = tuple(m["model_id"] for m in data["models"])
            gguf = next(m["path"] for m in data["models"] if m.get("path", "").endswith(".gguf"))
        except (OSError, ValueError, KeyError, TypeError, StopIteration) as exc:
            raise BadSetting(f"{manifest} does not name a .gguf model ({exc!r})") from None
    models_dir = Path(os.environ.get("MODELS_DIR") or HERE / "models")
    port = _env_int("FLOWCTL_PORT", DEFAULT_PORT, 0)
    if port > 65535:
        raise BadSetting(f"FLOWCTL_PORT={port} is above 65535")
    llama = LlamaSettings(
        model_path=models_dir / Path(gguf).name,
        n_ctx=_env_int("LLAMA_N_CTX", DEFAULT_N_CTX, 16),
        n_threads=_env_int("LLAMA_N_THREADS", os.cpu_count() or 1, 1),
        n_gpu_layers=_env_int("LLAMA_N_GPU_LAYERS", None, -1),
    )
    return WorkerSettings(host=os.environ.get("FLOWCTL_HOST", "127.0.0.1"), port=port,
                          models=models, llama=llama)


async def run_worker(settings: WorkerSettings) -> None:
    """Load the model, serve until SIGTERM or SIGINT, then free the model."""
    # Installed before the (slow) load so that a SIGTERM during it is a clean stop.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        backend = await trio.to_thread.run_sync(LlamaBackend, settings.llama)
        try:
            from llama_app import create_app

            device = "gpu" if backend.n_gpu_layers else "cpu"
            app = create_app(Engine(backend), settings.models, device=device)
            config = Config()
            config.bind = [f"{settings.host}:{settings.port}"]
            config.accesslog = None
            config.loglevel = "WARNING"
            config.graceful_timeout = GRACEFUL_TIMEOUT_S

            async def shutdown_trigger() -> None:
                async for _ in signals:
                    return

            async with trio.open_nursery() as nursery:
                binds = await nursery.start(partial(serve, app, config,
                                                    shutdown_trigger=shutdown_trigger))
                print(f"llama-chat worker listening on {binds[0]} "
                      f"(model {settings.llama.model_path.name}, {device}, "
                      f"{settings.llama.n_threads} threads)", flush=True)
        finally:
            backend.close()


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


def main() -> int:
    """Run the worker; exit 2 on a bad setting, 1 when the model or the port is unusable."""
    try:
        settings = load_settings()
    except BadSetting as exc:
        print(f"llama-chat worker: {exc}", file=sys.stderr)
        return 2
    failure: BaseException | None = None
    try:
        trio.run(run_worker, settings)
    except* BackendUnavailable as group:
        failure = _first_leaf(group)
    except* OSError as group:
        leaf = _first_leaf(group)
        failure = OSError(f"cannot listen on {settings.host}:{settings.port}: "
                          f"{getattr(leaf, 'strerror', None) or leaf}")
    if failure is not None:
        print(f"llama-chat worker: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
