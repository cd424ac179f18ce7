"""Benchmark: `flowctl node install` from our hub vs curl + openssl + tar of the same bundle.

    .venv/bin/python bench/install.py [--size-mib 1024] [--runs 3]

Builds a bundle of SIZE MiB (a model of 900/1024 of it, random bytes, plus 50 small
files), packs v1.0.0 and v1.0.1 (only main.py differs), starts the hub as a child
process on 127.0.0.1 and publishes both. Then, interleaved, RUNS times each:

  pipeline     curl -s -o B URL && openssl dgst -sha256 B && tar -I zstd -xf B
  install      python -m flowctl node install echo@1.0.0 (fresh data dir; fsyncs included)
  incremental  python -m flowctl node install echo@1.0.1 on top of that

Whole-process wall times (interpreter start included), medians. Targets (issue 4):
install within 1.2x of the pipeline; incremental under 1 MiB downloaded and under 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._machine import machine_report

MIB = 1024 * 1024
ADMIN_KEY = "bench-admin-key"
SMALL_FILES = 50


def serve(data_dir: str) -> None:
    """Child process: run a hub over `data_dir` and print its URL once listening."""
    import trio

    from runtime.hub.serve import serve_hub
    from runtime.hub.state import HubSettings

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(lambda task_status: serve_hub(
                HubSettings(data_dir=Path(data_dir), port=0), admin_key=ADMIN_KEY,
                task_status=task_status))
            print(urls[0], flush=True)

    trio.run(main)


def write_source(root: Path, version: str, size_mib: int, model: Path) -> Path:
    root.mkdir(parents=True)
    (root / "service.json").write_text(json.dumps({
        "service_id": "echo", "version": version, "startup_command": "python main.py",
        "models": [{"model_id": "bench-model", "model_type": "chat", "path": "models/model.bin"}]}))
    (root / "main.py").write_text(f"print('echo {version}')\n")
    (root / "models").mkdir()
    os.link(model, root / "models" / "model.bin")
    rest = size_mib * MIB - model.stat().st_size
    rng = __import__("random").Random(7)
    (root / "lib").mkdir()
    for i in range(SMALL_FILES):
        (root / "lib" / f"part{i:03}.py").write_bytes(rng.randbytes(max(1, rest // SMALL_FILES)))
    return root


def publish(url: str, bundles: list[Path]) -> None:
    import trio

    from runtime.clients.hub import HubClient

    async def main() -> None:
        async with HubClient(url, token=ADMIN_KEY) as client:
            for b in bundles:
                await client.publish(b)

    trio.run(main)


def timed(argv: list[str] | str, *, shell: bool = False) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(argv, shell=shell, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {argv}\n{result.stderr}")
    return elapsed, result.stdout


def warm(path: Path) -> None:
    for p in path.rglob("*") if path.is_dir() else [path]:
        if p.is_file():
            with p.open("rb", buffering=0) as f:
                while f.read(8 * MIB):
                    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from packer.pack import pack_dir

    work = Path(tempfile.mkdtemp(prefix="flowctl-bench-install-"))
    hub = None
    try:
        model = work / "model.bin"
        with model.open("wb") as f:
            for _ in range(args.size_mib * 900 // 1024):
                f.write(os.urandom(MIB))
        bundles = []
        for version in ("1.0.0", "1.0.1"):
            src = write_source(work / f"src-{version}", version, args.size_mib, model)
            bundles.append(pack_dir(src, work / "dist", level=1).path)
            shutil.rmtree(src)
        model.unlink()
        hub = subprocess.Popen([sys.executable, __file__, "--serve", str(work / "hub")],
                               stdout=subprocess.PIPE, text=True)
        url = hub.stdout.readline().strip()
        publish(url, bundles)
        bundle_url = f"{url}/storage/services/echo/1.0.0.fbundle"
        size = bundles[0].stat().st_size
        print(f"bundle {size / MIB:.0f} MiB ({SMALL_FILES} small files + model), hub {url}")
        node = [sys.executable, "-m", "flowctl", "node", "install", "--hub", url, "--json",
                "--no-venv", "--data-dir"]
        pipe, full, incr, incr_bytes, incr_lib = [], [], [], [], []
        for run in range(args.runs + 1):  # run 0 warms the hub (it verifies blobs once)
            out = work / "out"
            out.mkdir()
            warm(work / "hub")
            t, _ = timed(f"cd {out} && curl -s -o B {bundle_url} && openssl dgst -sha256 B "
                         f"&& tar -I zstd -xf B", shell=True)
            shutil.rmtree(out)
            data = work / "node"
            warm(work / "hub")
            t_full, report = timed([*node, str(data), "echo@1.0.0"])
            assert json.loads(report)["downloaded_bytes"] > 0
            t_incr, report2 = timed([*node, str(data), "echo@1.0.1"])
            shutil.rmtree(data)
            if run == 0:
                continue
            pipe.append(t)
            full.append(t_full)
            incr.append(t_incr)
            incr_bytes.append(json.loads(report2)["downloaded_bytes"])
            incr_lib.append(json.loads(report2)["seconds"])
            print(f"run {run}: pipeline {t:.2f} s, install {t_full:.2f} s "
                  f"(library {json.loads(report)['seconds']:.2f} s), incremental {t_incr:.2f} s "
                  f"(library {incr_lib[-1]:.2f} s, {incr_bytes[-1]} bytes)")
        p, f, i = statistics.median(pipe), statistics.median(full), statistics.median(incr)
        print(f"pipeline (curl+openssl+tar)  median {p:.2f} s  ({size / MIB / p:.0f} MiB/s)")
        print(f"flowctl node install         median {f:.2f} s  ({size / MIB / f:.0f} MiB/s), "
              f"{f / p:.2f}x the pipeline (target <= 1.2x: {'ok' if f / p <= 1.2 else 'MISSED'})")
        print(f"incremental 1.0.0 -> 1.0.1   median {i:.2f} s (in the library "
              f"{statistics.median(incr_lib):.2f} s), downloaded {max(incr_bytes)} bytes "
              f"(target < 2 s and < 1 MiB: {'ok' if i < 2 and max(incr_bytes) < MIB else 'MISSED'})")
    finally:
        if hub is not None:
            hub.terminate()
            hub.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(sys.argv[2])
    else:
        with machine_report():
            main()
