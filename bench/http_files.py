"""Benchmark: one large file through runtime.http.serve_file on serve_app, fetched with curl.

    .venv/bin/python bench/http_files.py [--size-mib 1024] [--runs 5]

Starts the server as a child process (so its CPU time is its own), downloads the file
with ``curl -s -o /dev/null -w '%{speed_download}'`` several times, then the last 100 MB
with ``Range: bytes=-100000000``, and prints MiB/s (median, min-max) and the server's CPU
seconds per GiB. The page cache is warmed before every run (DAMON on these machines
evicts pages left untouched for about a minute). Compare with BASELINES.md section 3.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._machine import cpu_seconds, machine_report

MIB = 1024 * 1024


def serve(path: Path, chunk_size: int) -> None:
    """Child process: serve `path` at /file and print the URL once listening."""
    import trio
    from quart_trio import QuartTrio

    from runtime.http import serve_app, serve_file

    app = QuartTrio("bench")

    @app.route("/file")
    async def file():  # type: ignore[no-untyped-def]
        return await serve_file(path, etag="bench", chunk_size=chunk_size)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(lambda task_status: serve_app(
                app, host="127.0.0.1", port=0, task_status=task_status))
            print(urls[0], flush=True)

    trio.run(main)


def warm(path: Path) -> None:
    with path.open("rb", buffering=0) as f:
        while f.read(8 * MIB):
            pass


def curl(url: str, *extra: str) -> float:
    """Download speed in MiB/s as curl measured it."""
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{speed_download} %{http_code}", *extra, url],
        capture_output=True, text=True, check=True, timeout=600,
    ).stdout.split()
    if out[1] not in ("200", "206"):
        raise SystemExit(f"curl got HTTP {out[1]}")
    return float(out[0]) / MIB


def measure(label: str, url: str, path: Path, pid: int, runs: int, nbytes: int,
            *extra: str) -> None:
    speeds, cpu = [], []
    for _ in range(runs):
        warm(path)
        before = cpu_seconds(pid)
        speeds.append(curl(url, *extra))
        cpu.append((cpu_seconds(pid) - before) / (nbytes / (1024 * MIB)))
    print(f"{label:<28} {statistics.median(speeds):8.0f} MiB/s "
          f"({min(speeds):.0f}-{max(speeds):.0f}, n={runs})  "
          f"server CPU {statistics.median(cpu):.2f} s/GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--chunk-kib", type=int, default=1024, help="serve_file's chunk size")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.chunk_kib * 1024)
        return
    if shutil.which("curl") is None:
        raise SystemExit("curl is needed: apt-get install curl")
    size = args.size_mib * MIB
    with tempfile.TemporaryDirectory(prefix="flowctl-bench-") as tmp:
        path = Path(tmp) / "blob"
        with path.open("wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(MIB))
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(path),
                                   "--chunk-kib", str(args.chunk_kib)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            url = server.stdout.readline().strip() + "/file"
            print(f"serve_file on serve_app, {args.size_mib} MiB file, "
                  f"{args.chunk_kib} KiB chunks, curl, loopback")
            measure("full GET", url, path, server.pid, args.runs, size)
            tail = min(100_000_000, size)
            measure("Range: bytes=-100000000", url, path, server.pid, args.runs, tail,
                    "-H", f"Range: bytes=-{tail}")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    with machine_report():
        main()
