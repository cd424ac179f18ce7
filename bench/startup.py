"""Start-up time of the CLI: median wall time of `flowctl --help` and `flowctl pack` of a tiny dir.

    .venv/bin/python bench/startup.py [--runs 15]

Each run is a whole process (`python -m flowctl ...`), as a user would start it.
Also prints `python -c pass` as the floor. The machine is shared: compare medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(argv: list[str], runs: int) -> tuple[float, float]:
    """(median, min) wall seconds over `runs` runs after one warm-up."""
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"{argv} failed: {proc.stderr.decode()}")
        if i:
            times.append(elapsed)
    return statistics.median(times), min(times)


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
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "flowctl --help": [sys.executable, "-m", "flowctl", "--help"],
            "flowctl pack TINY": [sys.executable, "-m", "flowctl", "pack", str(src), "-o", str(tmp / "dist")],
        }
        print(f"{'command':22}{'median':>9}{'min':>9}   ({args.runs} runs)")
        for name, argv in cases.items():
            median, best = timed(argv, args.runs)
            print(f"{name:22}{median * 1000:7.0f}ms{best * 1000:7.0f}ms")


if __name__ == "__main__":
    main()
