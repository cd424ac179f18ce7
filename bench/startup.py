"""Start-up time of the CLI: median wall time of `flowctl --help`, `pack`, `status` and `tenants ls`.

    .venv/bin/python bench/startup.py [--runs 15]

Each run is a whole process (`python -m flowctl ...`), as a user would start it,
with bytecode caching on (PYTHONDONTWRITEBYTECODE is dropped from the environment:
where it is set, every run would recompile the project's modules, which no user
pays). Also prints `python -c pass` as the floor. The machine is shared: compare medians.

`status` and `tenants ls` run against a closed port of 127.0.0.1: they import what a
real run imports, start Trio, are refused at once and exit 1 with a one-line error,
so the figure is their start-up cost without a control plane's answer time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._machine import machine_report

_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], runs: int, *, expect: int = 0) -> tuple[float, float, float]:
    """(median wall, min wall, median CPU) seconds over `runs` runs after one warm-up.

    CPU time (user + sys) is less disturbed than wall time when other work shares the machine.
    """
    times, cpus = [], []
    for i in range(runs + 1):
        cpu = _child_cpu()
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, env=_ENV)
        elapsed = time.perf_counter() - start
        cpu = _child_cpu() - cpu
        if proc.returncode != expect:
            sys.exit(f"{argv} exited {proc.returncode}, not {expect}: {proc.stderr.decode()}")
        if i:
            times.append(elapsed)
            cpus.append(cpu)
    return statistics.median(times), min(times), statistics.median(cpus)


def closed_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flowctl-startup-") as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "tiny"
        src.mkdir()
        (src / "service.json").write_text(json.dumps(
            {"service_id": "tiny", "version": "0.1.0", "startup_command": "python main.py"}))
        (src / "main.py").write_text("print('tiny')\n")
        nowhere = f"http://127.0.0.1:{closed_port()}"
        flowctl = [sys.executable, "-m", "flowctl"]
        cases = {
            "python -c pass": ([sys.executable, "-c", "pass"], 0),
            "flowctl --help": ([*flowctl, "--help"], 0),
            "flowctl pack TINY": ([*flowctl, "pack", str(src), "-o", str(tmp / "dist")], 0),
            "flowctl status": ([*flowctl, "status", "--server", nowhere], 1),
            "flowctl tenants ls": ([*flowctl, "tenants", "ls", "--server", nowhere], 1),
        }
        print(f"{'command':22}{'median':>9}{'min':>9}{'cpu':>9}   ({args.runs} runs; load {_load()})")
        for name, (argv, expect) in cases.items():
            median, best, cpu = timed(argv, args.runs, expect=expect)
            print(f"{name:22}{median * 1000:7.0f}ms{best * 1000:7.0f}ms{cpu * 1000:7.0f}ms")


if __name__ == "__main__":
    with machine_report():
        main()
