"""Shares of a py-spy raw profile by layer, for one process: how issue 20's floor notes were made.

    .venv/bin/py-spy record --subprocesses --nonblocking -r 250 -f raw -o /tmp/gw.raw -- \\
        .venv/bin/python bench/gateway.py --duration 5
    .venv/bin/python bench/_profile_shares.py /tmp/gw.raw "gateway.py --serve"

Each sample is charged to its innermost frame's layer: trio's scheduling and epoll, the
socket calls (trio/_socket.py: the send/recv syscalls), hypercorn with h11/wsproto/quart,
each of flowctl's runtime packages, the rest.
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

FRAME = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")
SERVER = ("hypercorn", "h11", "wsproto", "quart", "werkzeug")
CLIENTS = ("trio_websocket", "httpcore", "httpx")


def layer(path: str) -> str:
    """The layer a frame's file belongs to (py-spy writes site-packages paths from the package)."""
    if path.startswith(("trio/_socket.py", "trio/_highlevel_socket")):
        return "socket syscalls (trio/_socket)"
    if path.startswith(("trio/", "outcome/")):
        return "trio scheduling and epoll"
    for name in SERVER:
        if path.startswith(name + "/"):
            return "hypercorn, h11, wsproto, quart"
    for name in CLIENTS:
        if path.startswith(name + "/"):
            return name
    if (ours := re.match(r"^(runtime/\w+)", path)) is not None:
        return "flowctl: " + ours.group(1)
    return "stdlib and other"


def shares(raw: Path, process: str) -> tuple[collections.Counter[str], int]:
    """Samples per layer of the processes whose command line contains `process`, and their total."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        cut = max((i for i, f in enumerate(frames) if f.startswith("process ")), default=-1)
        if cut < 0 or process not in frames[cut]:
            continue
        frames = [f for f in frames[cut + 1:] if not f.startswith("thread ")]
        if frames and (m := FRAME.match(frames[-1])) is not None:
            counts[layer(m.group(2))] += int(n)
    return counts, sum(counts.values())


def main() -> None:
    """Print the shares."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw", type=Path, help="py-spy's output with -f raw")
    parser.add_argument("process", help="a part of the profiled process's command line")
    args = parser.parse_args()
    counts, total = shares(args.raw, args.process)
    if not total:
        raise SystemExit(f"no samples of a process matching {args.process!r} in {args.raw}")
    for name, n in counts.most_common():
        print(f"{100 * n / total:5.1f} %  {name}")
    print(f"{total} samples")


if __name__ == "__main__":
    main()
