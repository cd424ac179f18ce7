"""bench/llm.py --streams: aggregate tokens/s and inter-token latency under concurrent streams (issue 19).

Same prompts (bench/_llm_load.PROMPTS, one per stream), greedy, `--tokens` each, 2 threads:

  (a) our worker direct (LLAMA_PARALLEL = the largest concurrency)
  (b) the same worker through the gateway and the node tunnel
  (c) `python -m llama_cpp.server` (llama-cpp-python's server; one request at a time)
  (d) llama.cpp's `llama-server --parallel N` (continuous batching), restarted for each N;
      found or built by bench/_llama_server.py, which says which

For each concurrency the four run one after the other, so outside load hits all alike.
Then a growing chat of `--session-turns` turns against (a), with and without prompt-cache
reuse (a second worker with LLAMA_PROMPT_CACHE=0): time to first token per turn.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from bench._llama_server import NoServer, find_or_build
from bench._llm_load import LoadResult, run_load, session_ttfts

N_CTX_SEQ = 1024


def _worker_env(port: int, threads: int, parallel: int, cache: bool = True) -> dict[str, str]:
    return {"FLOWCTL_PORT": str(port), "LLAMA_N_THREADS": str(threads),
            "LLAMA_N_CTX": str(N_CTX_SEQ), "LLAMA_PARALLEL": str(parallel),
            "LLAMA_N_GPU_LAYERS": "0", "LLAMA_PROMPT_CACHE": "1" if cache else "0"}


@contextmanager
def _llama_server(binary: Path, gguf: Path, port: int, threads: int, parallel: int) -> Iterator[str]:
    from bench.llm import MODEL_ID, open_server

    argv = [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
            "-c", str(parallel * N_CTX_SEQ), "-np", str(parallel), "-cb", "-t", str(threads),
            "-tb", str(threads), "-ngl", "0", "--alias", MODEL_ID]
    url = f"http://127.0.0.1:{port}"
    with open_server(argv, url):
        yield url


def _row(name: str, res: LoadResult | str) -> str:
    if isinstance(res, str):
        return f"  {name:34} {res}"
    return (f"  {name:34} {res.tokens_per_s:9.1f} {res.itl(0.5):8.1f} {res.itl(0.99):8.1f} "
            f"{sorted(res.ttft_ms)[len(res.ttft_ms) // 2]:9.0f} {res.tokens:7d}")


def run(gguf: Path, streams: list[int], tokens: int, threads: int, turns: int) -> int:
    """Run the concurrency table (none if `streams` is empty) and the session TTFTs; print them."""
    from bench.llm import MODEL_ID, WORKER_DIR, free_port, open_server

    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    try:
        server_bin, how = find_or_build(allow_build=os.environ.get("BENCH_BUILD_LLAMA_SERVER") == "1")
        print(f"(d) llama-server: {how}")
    except NoServer as exc:
        server_bin, how = None, f"skipped: {exc}"
        print(f"(d) llama-server {how}")
    names = ["(a) our worker, direct", "(b) gateway + node tunnel", "(c) llama_cpp.server",
             "(d) llama-server --parallel N"]
    table: dict[int, dict[str, LoadResult | str]] = {n: {} for n in streams}
    if streams:  # empty: the session part only (--sessions-only)
        _table(table, names, streams, gguf, tokens, threads, server_bin, how)
    sessions: dict[str, list[tuple[float, int, int]]] = {}
    for label, cache in (("with cache reuse", True), ("without (LLAMA_PROMPT_CACHE=0)", False)):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with open_server([sys.executable, "worker.py"], url, cwd=WORKER_DIR,
                         env=_worker_env(port, threads, 4, cache)):
            # Warm-up with a conversation sharing nothing with the measured one, so that its
            # turn 1 is read cold, as a new session's is.
            session_ttfts(url, MODEL_ID, 1, 4, system="Answer in one word. ")
            sessions[label] = session_ttfts(url, MODEL_ID, turns, 24)
    load = os.getloadavg()
    _report(table, names, streams, sessions, tokens, threads)
    print(f"\nload average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


def _table(table: dict[int, dict[str, LoadResult | str]], names: list[str], streams: list[int],
           gguf: Path, tokens: int, threads: int, server_bin: Path | None, how: str) -> None:
    """Fill `table`: each source at each concurrency, llama-server restarted for each."""
    from bench.llm import (
        MODEL_ID,
        WORKER_DIR,
        free_port,
        llama_cpp_server_argv,
        missing_server_deps,
        open_server,
    )

    top = max(streams)
    with ExitStack() as stack:
        port_a = free_port()
        url_a = f"http://127.0.0.1:{port_a}"
        stack.enter_context(open_server([sys.executable, "worker.py"], url_a, cwd=WORKER_DIR,
                                        env=_worker_env(port_a, threads, top)))
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        import tempfile

        from bench._cluster import start_cluster, stop

        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-llm-batch-"))
        proc, info = start_cluster(Path(tmp), WORKER_DIR, url_a, max_concurrency=top)
        stack.callback(stop, proc)
        url_c = None
        if (why := missing_server_deps()) is None:
            port_c = free_port()
            url_c = f"http://127.0.0.1:{port_c}"
            argv = llama_cpp_server_argv(gguf, port_c, threads)
            argv[argv.index("--n_ctx") + 1] = str(N_CTX_SEQ)
            # By default a new request interrupts the running one; queue them instead.
            argv += ["--interrupt_requests", "False"]
            stack.enter_context(open_server(argv, url_c))
        sources: list[tuple[str, Callable[[int], LoadResult | str]]] = [
            (names[0], lambda n: run_load(url_a, MODEL_ID, n, tokens)),
            (names[1], lambda n: run_load(info["gateway"], MODEL_ID, n, tokens, key=info["key"])),
            (names[2], (lambda n: run_load(url_c, MODEL_ID, n, tokens)) if url_c else (lambda n: why or "")),
        ]
        for _, fn in sources:  # warm-up
            fn(1)
        for n in streams:
            for name, fn in sources:
                try:
                    table[n][name] = fn(n)
                except* (httpx.HTTPError, RuntimeError) as group:
                    table[n][name] = f"failed: {group.exceptions[0]!r}"[:200]
                print(_row(f"{name} @{n}", table[n][name]), flush=True)
            if server_bin is None:
                table[n][names[3]] = how
                continue
            port_d = free_port()
            try:
                with _llama_server(server_bin, gguf, port_d, threads, n) as url_d:
                    run_load(url_d, MODEL_ID, 1, 8)  # warm-up
                    table[n][names[3]] = run_load(url_d, MODEL_ID, n, tokens)
            except RuntimeError as exc:
                table[n][names[3]] = f"failed: {str(exc)[:200]}"
            print(_row(f"{names[3]} @{n}", table[n][names[3]]), flush=True)


def _report(table: dict[int, dict[str, LoadResult | str]], names: list[str], streams: list[int],
            sessions: dict[str, list[tuple[float, int, int]]], tokens: int, threads: int) -> None:
    if not streams:
        _report_sessions(sessions)
        return
    print(f"\nGemma 3 270M Q4_K_M, greedy, {tokens} tokens a stream, {threads} threads, CPU, "
          f"{N_CTX_SEQ} tokens of context a sequence\n")
    print("  tok/s: aggregate decode rate, from the first token of any stream to the last")
    print(f"  {'':34} {'tok/s':>9} {'ITL p50':>8} {'ITL p99':>8} {'TTFT p50':>9} {'tokens':>7}")
    for n in streams:
        print(f"{n} concurrent streams")
        for name in names:
            print(_row(name, table[n].get(name, "not run")))
        a, b, c, d = (table[n].get(name) for name in names)
        ratios = []
        for label, top, base in (("(a)/(d)", a, d), ("(a)/(c)", a, c), ("(b)/(a)", b, a)):
            if isinstance(top, LoadResult) and isinstance(base, LoadResult):
                ratios.append(f"{label} x{top.tokens_per_s / base.tokens_per_s:.2f}")
        print("  " + ", ".join(ratios) + "  (targets: (a)/(d) >= 1.0, (a)/(c) >= 3 at 8, (b)/(a) >= 0.95)")
    _report_sessions(sessions)


def _report_sessions(sessions: dict[str, list[tuple[float, int, int]]]) -> None:
    print("\nSession (growing chat, whole history each turn, turn 1 cold), TTFT ms per turn,"
          " then prompt tokens/cached:")
    for label, turns in sessions.items():
        ttfts = [t for t, _, _ in turns]
        print(f"  {label:32} " + " ".join(f"{t:6.0f}" for t in ttfts)
              + (f"   turn {len(ttfts)}/turn 1 x{ttfts[-1] / ttfts[0]:.2f}" if ttfts else ""))
        print(f"  {'':32} " + " ".join(f"{p}/{c}" for _, p, c in turns))
    print("  (target: turn 10 within 1.5x of turn 1 with cache reuse)")
