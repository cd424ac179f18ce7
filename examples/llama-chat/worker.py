"""The llama-chat worker: Gemma 3 270M on llama-cpp-python behind OpenAI routes (quart-trio).

Environment:
  FLOWCTL_PORT        port to listen on (0: any free port; default 8000)
  FLOWCTL_HOST        address to bind (default 127.0.0.1)
  MODELS_DIR          where the GGUF named in service.json is (default: models/ beside this file;
                      without a service.json, the names of the shipped one are used)
  LLAMA_N_THREADS     CPU threads for llama.cpp (default: os.cpu_count())
  LLAMA_N_CTX         context window of one sequence, in tokens (default 4096)
  LLAMA_N_GPU_LAYERS  layers to offload (default: all when the build supports a GPU, else 0)
  LLAMA_PARALLEL      sequences decoded together, max_concurrency (default 8, fewer when the
                      KV cache would not fit in a quarter of the memory available)
  LLAMA_KV_TOKENS     KV cache cells for all sequences, running and cached: the memory
                      budget of prompt-cache reuse (default LLAMA_PARALLEL * LLAMA_N_CTX)
  LLAMA_CHUNK         prompt tokens evaluated per decode step (default 256)
  LLAMA_CACHE_SEQS    sequence ids, running and cached (default 4 * LLAMA_PARALLEL, at most 256)
  LLAMA_PROMPT_CACHE  1 (default): reuse cached prompt prefixes; 0: evaluate every prompt whole
  LLAMA_FLASH_ATTN    1 or 0; default: llama.cpp's choice on a GPU, off on the CPU
  LLAMA_DETERMINISTIC 1 (default): a sequence's output does not depend on its batch-mates
                      (a KV stream per sequence, no repacked weights); 0: one unified cache
The bundle sets these in service.json's `env`; a node operator's LLAMA_* override them.

It loads the model first, then listens and prints `llama-chat worker listening on
http://HOST:PORT` on stdout. SIGTERM or SIGINT: stop accepting, let running requests
finish for up to GRACEFUL_TIMEOUT_S (then cancel them), exit 0.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from llama_backend import (
    DEFAULT_CHUNK,
    DEFAULT_N_CTX,
    DEFAULT_PARALLEL,
    BackendUnavailable,
    LlamaBackend,
    LlamaSettings,
)
from llama_engine import Engine

GRACEFUL_TIMEOUT_S = 5.0
MAX_PARALLEL = 256  # llama.cpp's sequence ids
DEFAULT_PORT = 8000
HERE = Path(__file__).resolve().parent
# What the shipped service.json says, for an install that did not keep service.json.
DEFAULT_MODELS = ("gemma-3-270m", "gemma-3-270m-embedding")
DEFAULT_GGUF = "models/gemma-3-270m-q4_k_m.gguf"
# What one cached token costs in Gemma 3 270M's KV cache (18 layers, K and V of 256 f16
# values each, full-size sliding-window layers); used to fit the default cache in memory.
KV_BYTES_PER_TOKEN = 18 * 2 * 256 * 2
MEMINFO = Path("/proc/meminfo")


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
    n_ctx = _env_int("LLAMA_N_CTX", DEFAULT_N_CTX, 16)
    parallel = _env_int("LLAMA_PARALLEL", None, 1) or default_parallel(n_ctx, available_memory())
    if parallel > MAX_PARALLEL:
        raise BadSetting(f"LLAMA_PARALLEL={parallel} is above {MAX_PARALLEL}")
    kv_tokens = _env_int("LLAMA_KV_TOKENS", parallel * n_ctx, 16)
    if kv_tokens < n_ctx:
        raise BadSetting(f"LLAMA_KV_TOKENS={kv_tokens} is below LLAMA_N_CTX={n_ctx} "
                         "(one sequence must fit)")
    llama = LlamaSettings(
        model_path=models_dir / Path(gguf).name,
        n_ctx=n_ctx,
        n_threads=_env_int("LLAMA_N_THREADS", os.cpu_count() or 1, 1),
        n_gpu_layers=_env_int("LLAMA_N_GPU_LAYERS", None, -1),
        parallel=parallel,
        kv_tokens=kv_tokens,
        chunk=_env_int("LLAMA_CHUNK", DEFAULT_CHUNK, 1),
        cache_seqs=_env_int("LLAMA_CACHE_SEQS", None, 1),
        prompt_cache=_env_int("LLAMA_PROMPT_CACHE", 1, 0) != 0,
        flash_attn=None if (fa := _env_int("LLAMA_FLASH_ATTN", None, 0)) is None else fa != 0,
        deterministic=_env_int("LLAMA_DETERMINISTIC", 1, 0) != 0,
    )
    return WorkerSettings(host=os.environ.get("FLOWCTL_HOST", "127.0.0.1"), port=port,
                          models=models, llama=llama)


def available_memory(meminfo: Path = MEMINFO) -> int | None:
    """Bytes of memory available now (Linux MemAvailable), or None where unknown."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def default_parallel(n_ctx: int, memory: int | None) -> int:
    """DEFAULT_PARALLEL, or fewer when their KV cache would take over a quarter of `memory`."""
    if memory is None:
        return DEFAULT_PARALLEL
    fits = memory // 4 // (n_ctx * KV_BYTES_PER_TOKEN)
    return max(1, min(DEFAULT_PARALLEL, fits))


async def run_worker(settings: WorkerSettings) -> None:
    """Load the model, serve until SIGTERM or SIGINT, then free the model."""
    # Installed before the (slow) load so that a SIGTERM during it is a clean stop.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        backend = await trio.to_thread.run_sync(LlamaBackend, settings.llama)
        stack = ExitStack()
        try:
            from llama_app import create_app

            device = "gpu" if backend.n_gpu_layers else "cpu"
            engine = stack.enter_context(Engine(backend))  # stopped before the backend is freed
            app = create_app(engine, settings.models, device=device)
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
                      f"{settings.llama.n_threads} threads, {backend.parallel} sequences of "
                      f"{backend.n_ctx} tokens, KV cache {backend.kv_tokens} tokens)", flush=True)
        finally:
            stack.close()
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
