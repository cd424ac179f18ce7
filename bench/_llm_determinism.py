"""What deterministic batching costs: the llama-chat decode loop with LLAMA_DETERMINISTIC on and off.

In process, no HTTP: the worker's LlamaBackend and Batcher (examples/llama-chat), greedy,
the same prompts (bench/_llm_load.PROMPTS), `--tokens` each, at each concurrency. Each mode
runs in its own child process (llama.cpp reads GGML_CPU_TILED_MM once per process), and
the modes alternate round by round so outside load hits both alike. Aggregate tokens/s
counts from the first token of the step to the last token (prompt reading excluded).

Run: .venv/bin/python bench/_llm_determinism.py [--streams 1,8,16] [--tokens 64] [--rounds 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKER_DIR = ROOT / "examples" / "llama-chat"
WAIT_S = 600.0


def measure(streams: list[int], tokens: int, threads: int) -> dict[str, float]:
    """Aggregate decode tokens/s at each concurrency, in this process's mode."""
    sys.path.insert(0, str(WORKER_DIR))
    sys.path.insert(0, str(ROOT))
    import llama_backend
    import llama_types
    import worker
    from llama_batcher import Batcher, Job

    from bench._llm_load import PROMPTS

    settings = dataclasses.replace(worker.load_settings().llama, n_ctx=1024, n_threads=threads,
                                   parallel=max(streams), n_gpu_layers=0)
    backend = llama_backend.LlamaBackend(settings)
    batcher = Batcher(backend)
    out: dict[str, float] = {}
    try:
        for n in streams:
            batcher.cache.clear()
            stamps: list[float] = []  # when each piece of text arrived, all streams
            done = [threading.Event() for _ in range(n)]

            def post(item: object, stamps: list[float] = stamps) -> None:
                if isinstance(item, str):
                    stamps.append(time.perf_counter())

            for i in range(n):
                prompt = backend.tokenize(PROMPTS[i % len(PROMPTS)], bos=True, special=True)
                sampling = llama_types.Sampling(max_tokens=tokens, temperature=0.0)
                batcher.submit(Job(prompt, sampling, post, done[i].set))
            for event in done:
                if not event.wait(WAIT_S):
                    raise RuntimeError(f"{n} streams did not finish within {WAIT_S} s")
            span = stamps[-1] - stamps[0]
            out[str(n)] = (len(stamps) - 1) / span if span > 0 else float("nan")
    finally:
        batcher.close()
        backend.close()
    return out


def main() -> int:
    """Alternate the two modes in child processes; print the medians and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1,8,16")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    streams = [int(n) for n in args.streams.split(",")]
    if args.child:
        print(json.dumps(measure(streams, args.tokens, args.threads)))
        return 0
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    runs: dict[str, list[dict[str, float]]] = {"1": [], "0": []}
    for i in range(args.rounds):
        for mode in ("1", "0") if i % 2 == 0 else ("0", "1"):
            done = subprocess.run(
                [sys.executable, __file__, "--child", "--streams", args.streams, "--tokens",
                 str(args.tokens), "--threads", str(args.threads)],
                env={**os.environ, "LLAMA_DETERMINISTIC": mode}, capture_output=True, text=True,
                timeout=WAIT_S * len(streams), check=False)
            if done.returncode != 0:
                print(f"LLAMA_DETERMINISTIC={mode} failed: {done.stderr[-1500:]}", file=sys.stderr)
                return 1
            runs[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  round {i + 1}, LLAMA_DETERMINISTIC={mode}: {runs[mode][-1]}", flush=True)
    load = os.getloadavg()
    print(f"\ngreedy, {args.tokens} tokens a stream, {args.threads} threads; aggregate tok/s, medians")
    print(f"{'streams':>8} {'deterministic':>14} {'unified':>9} {'ratio':>6}")
    for n in streams:
        on = statistics.median(r[str(n)] for r in runs["1"])
        off = statistics.median(r[str(n)] for r in runs["0"])
        print(f"{n:8d} {on:14.1f} {off:9.1f} {on / off:6.2f}")
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
