"""bench/disconnects.py in small: real `flowctl up` and `flowctl node join` processes survive
clients that hang up on streams, and a bystander's replies arrive whole (issue 12, item 1).
The soak itself (2,000 cut streams) is `python bench/disconnects.py`."""

import json
import subprocess
import sys
from pathlib import Path

import trio

BENCH = Path(__file__).resolve().parents[2] / "bench" / "disconnects.py"


async def run_soak(cuts: int, limit_s: int) -> dict:
    result = await trio.run_process([sys.executable, str(BENCH), "--cuts", str(cuts), "--limit-s", str(limit_s),
                                     "--json"], capture_stdout=True, capture_stderr=True, check=False,
                                    stdin=subprocess.DEVNULL)
    assert result.stdout, result.stderr.decode()[-2000:]
    figures = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert result.returncode == (0 if figures["healthy"] else 1)
    return figures


async def test_a_joined_node_and_the_plane_survive_hung_up_streams():
    with trio.fail_after(240):
        figures = await run_soak(cuts=96, limit_s=120)
    assert figures["cut_streams"] == 96
    assert figures["bystander_broken"] == 0 and figures["bystander_whole"] >= 1
    assert figures["node_connections_replaced"] == 0 and figures["connection_lost_lines"] == 0
    assert figures["processes_alive"] == 2 and figures["nodes_ready"] == 2

