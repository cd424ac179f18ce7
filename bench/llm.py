"""Tokens/s and time to first token of Gemma 3 270M served four ways (issue 8).

Same prompt and settings everywhere: greedy (temperature 0, repeat_penalty 1), 128 tokens,
2 threads, n_ctx 4096, streaming:

  (a) llama-cpp-python in-process: `Llama.create_completion(stream=True)`
  (b) `python -m llama_cpp.server`, the package's own OpenAI server, over HTTP
  (c) our worker, examples/llama-chat, directly over HTTP
  (d) the same worker as (c) through the gateway and the node tunnel: a plane and a node
      agent in a child process (bench/_cluster.py), the agent's replica pointing at (c)

All are loaded side by side (only one generates at a time), warmed up once, then measured
in RUNS interleaved rounds, so outside load on the machine hits all alike; medians reported.
Time to first token (TTFT) runs from sending the request to the first text received;
tokens/s is the decode rate after it, (tokens - 1) / (last - first).

Needs the llm extra and the model (`just llm-model`); (b) also needs llama-cpp-python's
server dependencies: pip install fastapi uvicorn sse-starlette pydantic-settings
starlette-context (`just llm-bench` installs them).

Run: .venv/bin/python bench/llm.py [--runs 5] [--tokens 128] [--threads 2]

Concurrent streams and sessions (issue 19; bench/_llm_batch.py): our worker direct and
through the gateway, llama_cpp.server and llama.cpp's llama-server --parallel N, at each
concurrency; then session TTFT per turn with and without prompt-cache reuse:
  .venv/bin/python bench/llm.py --streams 1,4,8,16 [--tokens 64] [--session-turns 10]
(BENCH_BUILD_LLAMA_SERVER=1 builds llama-server first if it is missing; or run
bench/_llama_server.py once.)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
WORKER_DIR = ROOT / "examples" / "llama-chat"
MODEL_ID = "gemma-3-270m"
PROMPT = "The capital of France is"
N_CTX = 4096
START_TIMEOUT_S = 120.0
SERVER_DEPS = ("fastapi", "uvicorn", "sse_starlette", "pydantic_settings", "starlette_context")


@dataclass(frozen=True)
class Run:
    """One streamed completion: when its pieces arrived and what they said."""

    ttft_s: float
    decode_s: float
    tokens: int
    text: str

    @property
    def tokens_per_s(self) -> float:
        """Decode rate after the first token."""
        return (self.tokens - 1) / self.decode_s if self.decode_s > 0 else float("nan")


@dataclass(frozen=True)
class Result:
    """The medians of one way of serving."""

    name: str
    ttft_ms: float
    tokens_per_s: float
    tokens: int
    text: str


def time_stream(pieces: Callable[[], Iterator[str]]) -> Run:
    """Consume one stream of text pieces and time it."""
    began = time.perf_counter()
    first = last = 0.0
    count, text = 0, []
    for piece in pieces():
        if not piece:
            continue
        last = time.perf_counter()
        if count == 0:
            first = last
        count += 1
        text.append(piece)
    return Run(ttft_s=first - began, decode_s=last - first, tokens=count, text="".join(text))


def summarize(name: str, runs: list[Run]) -> Result:
    """Medians over the measured runs."""
    return Result(name=name, ttft_ms=1000 * statistics.median(r.ttft_s for r in runs),
                  tokens_per_s=statistics.median(r.tokens_per_s for r in runs),
                  tokens=runs[-1].tokens, text=runs[-1].text)


def _llama_cpu():
    """examples/llama-chat/llama_cpu.py, the worker's guard against crashing AMX kernels."""
    if str(WORKER_DIR) not in sys.path:
        sys.path.insert(0, str(WORKER_DIR))
    import llama_cpu

    return llama_cpu


def model_path() -> Path:
    """The GGUF that examples/llama-chat/service.json names."""
    manifest = json.loads((WORKER_DIR / "service.json").read_text())
    return WORKER_DIR / manifest["models"][0]["path"]


@contextmanager
def open_in_process(gguf: Path, tokens: int, threads: int) -> Iterator[Callable[[], Iterator[str]]]:
    """(a) llama-cpp-python called in this process."""
    from llama_cpp import Llama

    _llama_cpu().apply()

    llm = Llama(model_path=str(gguf), n_ctx=N_CTX, n_threads=threads, n_threads_batch=threads,
                n_gpu_layers=0, verbose=False)

    def pieces() -> Iterator[str]:
        for chunk in llm.create_completion(PROMPT, max_tokens=tokens, temperature=0.0,
                                           repeat_penalty=1.0, stream=True):
            yield chunk["choices"][0]["text"]

    try:
        yield pieces
    finally:
        llm.close()


def http_pieces(url: str, model: str, tokens: int,
                key: str | None = None) -> Callable[[], Iterator[str]]:
    """A streamed /v1/completions request as a source of text pieces (with an API key if given)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    client = httpx.Client(base_url=url, timeout=120, headers=headers)
    body = {"model": model, "prompt": PROMPT, "max_tokens": tokens, "temperature": 0.0,
            "repeat_penalty": 1.0, "stream": True}

    def pieces() -> Iterator[str]:
        with client.stream("POST", "/v1/completions", json=body) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    choices = json.loads(line[6:]).get("choices") or [{}]
                    yield choices[0].get("text") or ""

    return pieces


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll GET /v1/models until it answers 200, the process dies, or the deadline passes."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-1500:]}")
        try:
            if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server did not answer within {START_TIMEOUT_S} s")


@contextmanager
def open_server(argv: list[str], url: str, *, cwd: Path | None = None,
                env: dict[str, str] | None = None) -> Iterator[None]:
    """Run a server process until the block ends (then SIGTERM, and SIGKILL after 15 s)."""
    with tempfile.NamedTemporaryFile(prefix="bench-llm-", suffix=".log") as log:
        proc = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **(env or {})},
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_up(url, proc, Path(log.name))
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def missing_server_deps() -> str | None:
    """Why (b) cannot run, or None."""
    missing = [m for m in SERVER_DEPS if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    return ("skipped: llama_cpp.server needs " + ", ".join(missing) + "; install with "
            "pip install fastapi uvicorn sse-starlette pydantic-settings starlette-context")


def llama_cpp_server_argv(gguf: Path, port: int, threads: int) -> list[str]:
    """(b) llama-cpp-python's own OpenAI server."""
    # The same AMX guard as (a) and (c) (see examples/llama-chat/llama_cpu.py), then the server.
    launch = (f"import sys; sys.path.insert(0, {str(WORKER_DIR)!r}); import llama_cpu; llama_cpu.apply(); "
              "import runpy; sys.argv[0] = 'llama_cpp.server'; runpy.run_module('llama_cpp.server', "
              "run_name='__main__', alter_sys=True)")
    return [sys.executable, "-c", launch, "--model", str(gguf), "--model_alias",
            MODEL_ID, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(N_CTX),
            "--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_gpu_layers", "0"]


def worker_env(port: int, threads: int) -> dict[str, str]:
    """(c) examples/llama-chat, directly."""
    return {"FLOWCTL_PORT": str(port), "LLAMA_N_THREADS": str(threads),
            "LLAMA_N_CTX": str(N_CTX), "LLAMA_N_GPU_LAYERS": "0"}


@contextmanager
def open_through_gateway(worker_url: str, tokens: int) -> Iterator[Callable[[], Iterator[str]]]:
    """(d) the worker at `worker_url` through the gateway and the node tunnel, with an API key.

    A child process runs the plane (hub + scheduler + gateway) and a node agent whose only
    replica is the running worker (bench/_cluster.py); stopped when the block ends.
    """
    sys.path.insert(0, str(ROOT))
    from bench._cluster import start_cluster, stop

    with tempfile.TemporaryDirectory(prefix="bench-llm-plane-") as tmp:
        proc, info = start_cluster(Path(tmp), WORKER_DIR, worker_url, max_concurrency=1)
        try:
            yield http_pieces(info["gateway"], MODEL_ID, tokens, key=info["key"])
        finally:
            stop(proc)


def report(results: list[Result | str], names: list[str], tokens: int, threads: int) -> None:
    """Print the table and the ratios."""
    print(f"\nGemma 3 270M Q4_K_M, prompt {PROMPT!r}, greedy, {tokens} tokens, "
          f"{threads} threads, CPU; medians\n")
    print(f"{'':36} {'TTFT ms':>9} {'tokens/s':>9} {'tokens':>7}")
    for name, res in zip(names, results, strict=True):
        if isinstance(res, Result):
            print(f"{res.name:36} {res.ttft_ms:9.1f} {res.tokens_per_s:9.1f} {res.tokens:7d}")
        else:
            print(f"{name:36} {res}")
    a, b, c, d = results
    print()
    for label, top, base, target in (("(c)/(a)", c, a, 0.98), ("(c)/(b)", c, b, 1.0), ("(d)/(c)", d, c, 0.95)):
        if isinstance(top, Result) and isinstance(base, Result):
            print(f"{label}: tokens/s x{top.tokens_per_s / base.tokens_per_s:.3f} (target >= {target}), "
                  f"TTFT {top.ttft_ms - base.ttft_ms:+.1f} ms")
    if isinstance(c, Result) and isinstance(d, Result):
        print(f"TTFT added by the gateway + tunnel: {d.ttft_ms - c.ttft_ms:+.1f} ms (target < 5 ms)")
    texts = {r.text for r in results if isinstance(r, Result)}
    print("same text from all: " + ("yes" if len(texts) == 1 else f"NO ({len(texts)} variants)"))


def main() -> int:
    """Run (a), (b), (c) and (d); print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--streams", help="concurrency table instead, e.g. 1,4,8,16")
    parser.add_argument("--session-turns", type=int, default=10)
    parser.add_argument("--sessions-only", action="store_true",
                        help="with --streams: only the multi-turn session TTFTs")
    args = parser.parse_args()
    if importlib.util.find_spec("llama_cpp") is None:
        print("llama-cpp-python is not installed: pip install -e '.[llm]'", file=sys.stderr)
        return 1
    gguf = model_path()
    if not gguf.is_file():
        print(f"{gguf} is missing: run `just llm-model`", file=sys.stderr)
        return 1
    if args.streams:
        sys.path.insert(0, str(ROOT))
        from bench._llm_batch import run as run_batch

        try:
            streams = [int(n) for n in args.streams.split(",")]
        except ValueError:
            parser.error(f"--streams {args.streams!r} is not a list of integers like 1,4,8,16")
        if not streams or min(streams) < 1:
            parser.error("--streams needs positive integers")
        return run_batch(gguf, [] if args.sessions_only else streams, args.tokens, args.threads,
                         args.session_turns)
    names = ["(a) llama-cpp-python in-process", "(b) python -m llama_cpp.server",
             "(c) our worker, direct", "(d) gateway + node tunnel"]
    port_b, port_c = free_port(), free_port()
    skipped: dict[str, str] = {}
    with ExitStack() as stack:
        sources: dict[str, Callable[[], Iterator[str]]] = {}
        sources[names[0]] = stack.enter_context(open_in_process(gguf, args.tokens, args.threads))
        if (why := missing_server_deps()) is None:
            stack.enter_context(open_server(llama_cpp_server_argv(gguf, port_b, args.threads),
                                            f"http://127.0.0.1:{port_b}"))
            sources[names[1]] = http_pieces(f"http://127.0.0.1:{port_b}", MODEL_ID, args.tokens)
        else:
            skipped[names[1]] = why
        stack.enter_context(open_server([sys.executable, "worker.py"],
                                        f"http://127.0.0.1:{port_c}", cwd=WORKER_DIR,
                                        env=worker_env(port_c, args.threads)))
        sources[names[2]] = http_pieces(f"http://127.0.0.1:{port_c}", MODEL_ID, args.tokens)
        sources[names[3]] = stack.enter_context(open_through_gateway(f"http://127.0.0.1:{port_c}",
                                                                     args.tokens))
        # Rounds interleave the ways, so load from elsewhere on the machine hits all alike.
        runs: dict[str, list[Run]] = {name: [] for name in sources}
        for pieces in sources.values():
            time_stream(pieces)  # warm-up: first-use allocations, prompt cache
        for i in range(args.runs):
            for name, pieces in sources.items():
                runs[name].append(time_stream(pieces))
            print(f"  round {i + 1}/{args.runs} done", flush=True)
    results: list[Result | str] = [summarize(n, runs[n]) if n in runs else skipped[n]
                                   for n in names]
    report(results, names, args.tokens, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
