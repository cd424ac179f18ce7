"""Benchmark: flowctl pack / verify / unpack against the classic shell pipelines.

Generates a bundle source in a temporary directory (a "model" file of random
bytes, 90 % of --size-mib, plus ~5,000 small text/code files), then times, as
whole processes including interpreter start, interleaved, median of --runs:

    pack    flowctl pack DIR          vs  tar -cf - DIR | zstd -3 -T0 | tee OUT | openssl dgst -sha256
    verify  flowctl verify BUNDLE     vs  openssl dgst -sha256 BUNDLE
    unpack  flowctl unpack BUNDLE D   vs  tar -I zstd -xf BUNDLE -C D

and reports the ratio (ours / theirs; < 1 is faster) and the peak RSS of each
flowctl process (resource.getrusage). Everything it creates is deleted at the end.

    .venv/bin/python bench/pack.py                 # ~1 GiB, 3 runs
    .venv/bin/python bench/pack.py --size-mib 64   # smoke run
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._machine import machine_report

ROOT = Path(__file__).resolve().parent.parent
_RSS_WRAPPER = (
    "import atexit, resource, sys\n"
    "atexit.register(lambda: sys.stderr.write("
    "'MAXRSS %d\\n' % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n"
    "sys.argv = ['flowctl'] + sys.argv[1:]\n"
    "from flowctl.__main__ import main\n"
    "main()\n"
)


def make_source(root: Path, size_mib: int, small_files: int) -> None:
    """service.json + models/model.bin (random) + text files under src/ and docs/."""
    root.mkdir(parents=True)
    (root / "service.json").write_text(
        '{"service_id": "bench", "version": "1.0.0", "startup_command": "python src/main.py",'
        ' "created_at": "2026-01-01T00:00:00Z",'
        ' "models": [{"model_id": "bench-model", "model_type": "chat", "path": "models/model.bin"}]}\n')
    model_bytes = size_mib * 9 // 10 << 20
    (root / "models").mkdir()
    with open(root / "models" / "model.bin", "wb") as f:
        left = model_bytes
        while left:
            n = min(left, 16 << 20)
            f.write(os.urandom(n))
            left -= n
    small_total = (size_mib << 20) - model_bytes
    rng = random.Random(2)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz_", k=rng.randint(2, 10))) for _ in range(3000)]
    corpus = b"".join(rng.choice(words) + rng.choice([b" ", b" ", b"(", b"): ", b"\n    "])
                      for _ in range(400_000))
    per_file = max(1, small_total // small_files)
    for i in range(small_files):
        sub = root / ("src" if i % 3 else "docs") / f"pkg{i % 50:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        size = max(1, int(per_file * rng.uniform(0.2, 1.8)))
        start = rng.randrange(0, max(1, len(corpus) - size))
        (sub / f"mod{i:05d}.py").write_bytes(b"# file %d\n" % i + corpus[start:start + size])
    (root / "src" / "main.py").write_text("print('bench')\n")


def warm(path: Path) -> None:
    """Read a tree once so every timing starts from a warm page cache."""
    subprocess.run(f"find {path} -type f -print0 | xargs -0 cat > /dev/null", shell=True, check=True)


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(cmd: list[str] | str, *, shell: bool = False) -> tuple[float, float, int | None]:
    """Wall and CPU seconds of one whole process (with its children), and its MAXRSS (KiB)
    when it is a wrapped flowctl."""
    cpu = _child_cpu()
    start = time.perf_counter()
    proc = subprocess.run(cmd, shell=shell, capture_output=True, text=True,
                          executable="/bin/bash" if shell else None)
    elapsed = time.perf_counter() - start
    cpu = _child_cpu() - cpu
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {cmd}\n{proc.stderr}")
    rss = None
    for line in proc.stderr.splitlines():
        if line.startswith("MAXRSS "):
            rss = int(line.split()[1])
    return elapsed, cpu, rss


def flowctl(*args: str) -> list[str]:
    return [sys.executable, "-c", _RSS_WRAPPER, *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="source size in MiB (default 1024)")
    parser.add_argument("--files", type=int, default=5000, help="number of small files (default 5000)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per command (default 3)")
    parser.add_argument("--tmp", type=Path, default=None, help="where to put the data (default: $TMPDIR)")
    args = parser.parse_args()
    for tool in ("tar", "zstd", "openssl", "tee"):
        if shutil.which(tool) is None:
            sys.exit(f"bench needs {tool!r} on PATH")
    files = max(10, min(args.files, args.size_mib * 5))
    with tempfile.TemporaryDirectory(prefix="flowctl-bench-", dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "src"
        print(f"generating {args.size_mib} MiB source ({files} small files) in {tmp} ...", flush=True)
        make_source(src, args.size_mib, files)
        src_bytes = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
        warm(src)
        out = tmp / "dist"
        bundle = out / "bench-1.0.0.fbundle"
        pipe_out = tmp / "pipe.tar.zst"
        results: dict[str, list[list[float]]] = {k: [[], [], [], [], []] for k in ("pack", "verify", "unpack")}
        for i in range(args.runs + 1):  # the first round is a warm-up, not counted
            rows = {
                "pack": (flowctl("pack", str(src), "-o", str(out)),
                         f"set -o pipefail; tar -cf - -C {tmp} src | zstd -q -3 -T0 | tee {pipe_out}"
                         " | openssl dgst -sha256"),
                "verify": (flowctl("verify", str(bundle)), f"openssl dgst -sha256 {bundle}"),
                "unpack": (flowctl("unpack", str(bundle), str(tmp / "ours")),
                           f"mkdir {tmp / 'theirs'} && tar -I zstd -xf {bundle} -C {tmp / 'theirs'}"),
            }
            for name, (ours, theirs) in rows.items():
                shutil.rmtree(tmp / "ours", ignore_errors=True)
                shutil.rmtree(tmp / "theirs", ignore_errors=True)
                t_ours, cpu_ours, rss = run(ours)
                t_theirs, cpu_theirs, _ = run(theirs, shell=True)
                if i:
                    for column, value in zip(results[name], (t_ours, t_theirs, cpu_ours, cpu_theirs, rss or 0),
                                             strict=True):
                        column.append(value)
        bundle_bytes = bundle.stat().st_size
        print(f"\nsource {src_bytes / 2**20:.0f} MiB in {files + 2} files; bundle {bundle_bytes / 2**20:.0f} MiB; "
              f"median of {args.runs} runs (whole processes, warm page cache), CPUs: {os.cpu_count()}")
        print(f"{'':8}{'flowctl':>9}{'baseline':>9}{'ratio':>7}{'MiB/s':>7}"
              f"{'cpu':>8}{'cpu':>8}{'ratio':>7}{'peak RSS':>10}  baseline")
        labels = {"pack": "tar | zstd -3 -T0 | tee | openssl dgst", "verify": "openssl dgst -sha256",
                  "unpack": "tar -I zstd -xf"}
        for name, (ours, theirs, cpu_ours, cpu_theirs, rss) in results.items():
            a, b = statistics.median(ours), statistics.median(theirs)
            c, d = statistics.median(cpu_ours), statistics.median(cpu_theirs)
            print(f"{name:8}{a:8.2f}s{b:8.2f}s{a / b:7.2f}{src_bytes / 2**20 / a:7.0f}"
                  f"{c:7.2f}s{d:7.2f}s{c / d:7.2f}{max(rss) / 1024:7.0f} MB  {labels[name]}")
        print("wall: whole-process seconds; cpu: user+sys seconds of the process and its children; "
              "ratio: flowctl / baseline")


if __name__ == "__main__":
    with machine_report():
        main()
