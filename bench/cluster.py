"""Benchmark: how many node heartbeats the scheduler absorbs, and how fast it notices a lost node.

Starts a real control plane (`flowctl serve --roles hub,scheduler`) as a child
process, then simulates N nodes in this process, each on its own real WebSocket
over loopback, speaking the real control protocol (hello, then a heartbeat every
interval the plane asks for). It reports:

- heartbeats/s the plane absorbed (from its own per-node counters) and the plane
  process's CPU (utime+stime from /proc over the window), as % of one core;
- the time from a node's last heartbeat to the plane marking it lost, against
  the configured timeout (target: within timeout + 1 s).

Both sides share this machine's 2 cores: the simulated nodes' CPU is not counted
in the plane's figure. Everything it starts is stopped at the end.

    .venv/bin/python bench/cluster.py                      # 1,000 nodes, 5 s heartbeats, 30 s window
    .venv/bin/python bench/cluster.py --nodes 100 --window 10 --lost-after 3   # smoke run
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio
import trio_websocket

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._machine import cpu_seconds, machine_report  # noqa: E402
from runtime.control import messages  # noqa: E402
from runtime.control.messages import Heartbeat, Hello  # noqa: E402
from runtime.tunnel import open_mux  # noqa: E402

ADMIN = "bench-admin-key"
LAST_BEAT: dict[int, float] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def fake_node(url: str, token: str, index: int, *, stop_heartbeats: trio.Event | None,
                    connected: trio.Semaphore, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """One simulated node: hello, then heartbeats at the plane's interval, until cancelled."""
    async with trio_websocket.open_websocket_url(
        url, extra_headers=[("Authorization", f"Bearer {token}")], connect_timeout=60,
    ) as ws, open_mux(ws, opener=True) as mux:
        hello = Hello(node_id=f"sim{index:05d}", name=f"sim-{index:05d}", agent_version="bench",
                      cpu_count=8, ram_mb=32000)
        await mux.send_control(messages.encode(hello))
        welcome = messages.decode_plane_message(await mux.receive_control())
        connected.release()
        task_status.started()
        interval = welcome.heartbeat_interval_s
        await trio.sleep(random.uniform(0, interval))  # spread the heartbeats like real nodes
        seq = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain_control, mux)
            while stop_heartbeats is None or not stop_heartbeats.is_set():
                seq += 1
                await mux.send_control(messages.encode(Heartbeat(seq=seq, free_ram_mb=16000)))
                LAST_BEAT[index] = time.perf_counter()
                with trio.move_on_after(interval):
                    if stop_heartbeats is not None:
                        await stop_heartbeats.wait()
                    else:
                        await trio.sleep_forever()
            await trio.sleep_forever()  # silent but connected: only the timeout can find it


async def _drain_control(mux) -> None:
    while True:
        await mux.receive_control()


async def plane_status(client: httpx.AsyncClient) -> dict:
    response = await client.get("/api/cluster/status", headers={"Authorization": f"Bearer {ADMIN}"})
    response.raise_for_status()
    return response.json()


def raise_fd_limit(wanted: int) -> None:
    """Each simulated node is a socket here and one in the plane (which inherits this limit)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


async def main(args: argparse.Namespace) -> None:
    raise_fd_limit(args.nodes * 2 + 256)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="flowctl-bench-cluster-") as data:
        env = {**os.environ, "FLOWCTL_ADMIN_KEY": ADMIN}
        plane = await trio.lowlevel.open_process(
            [sys.executable, "-m", "flowctl", "serve", "--roles", "hub,scheduler", "--port", str(port),
             "--data-dir", data, "--heartbeat-interval", str(args.interval), "--lost-after", str(args.lost_after)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                with trio.fail_after(60):
                    while True:
                        try:
                            if (await client.get("/api/cluster/handshake")).status_code == 200:
                                break
                        except httpx.TransportError:
                            pass
                        await trio.sleep(0.1)
                token = (await client.post("/api/cluster/tokens", json={"name": "bench"},
                                           headers={"Authorization": f"Bearer {ADMIN}"})).json()["token"]
                ws_url = f"ws://127.0.0.1:{port}/api/cluster/connect"
                connected = trio.Semaphore(0, max_value=args.nodes + 1)
                silent = trio.Event()
                async with trio.open_nursery() as nursery:
                    started = time.perf_counter()
                    limiter = trio.Semaphore(50)  # connect in waves, as a fleet coming up would

                    async def one(i: int) -> None:
                        async with limiter:
                            await nursery.start(lambda task_status: fake_node(
                                ws_url, token, i, stop_heartbeats=silent if i == 0 else None,
                                connected=connected, task_status=task_status))

                    async with trio.open_nursery() as joining:
                        for i in range(args.nodes):
                            joining.start_soon(one, i)
                    print(f"{args.nodes} nodes joined in {time.perf_counter() - started:.1f} s")
                    await trio.sleep(args.interval * 1.5)  # every node has sent at least one heartbeat

                    before = await plane_status(client)
                    cpu0, t0 = cpu_seconds(plane.pid), time.perf_counter()
                    await trio.sleep(args.window)
                    cpu1, t1 = cpu_seconds(plane.pid), time.perf_counter()
                    after = await plane_status(client)
                    beats = sum(n["heartbeats"] for n in after["nodes"]) - sum(n["heartbeats"] for n in before["nodes"])
                    ready = sum(1 for n in after["nodes"] if n["state"] == "ready")
                    expected = args.nodes / args.interval
                    cpu_pct = 100 * (cpu1 - cpu0) / (t1 - t0)
                    print(f"heartbeats absorbed: {beats / (t1 - t0):,.0f}/s (expected {expected:,.0f}/s from "
                          f"{args.nodes} nodes every {args.interval:g} s); ready nodes: {ready}")
                    print(f"control plane CPU: {cpu_pct:.1f}% of one core over {t1 - t0:.0f} s "
                          f"(target < 25%) -> {'OK' if cpu_pct < 25 else 'MISSED'}")

                    silent.set()
                    while True:
                        status = await plane_status(client)
                        node = next(n for n in status["nodes"] if n["name"] == "sim-00000")
                        if node["state"] == "lost":
                            break
                        await trio.sleep(0.05)
                    detected = time.perf_counter() - LAST_BEAT[0]
                    print(f"lost node detected {detected:.2f} s after its last heartbeat "
                          f"(timeout {args.lost_after:g} s, target <= {args.lost_after + 1:g} s) -> "
                          f"{'OK' if detected <= args.lost_after + 1 else 'MISSED'}")
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                plane.send_signal(signal.SIGTERM)
                with trio.move_on_after(20):
                    await plane.wait()
                if plane.returncode is None:
                    plane.kill()
                    await plane.wait()


if __name__ == "__main__":
    with machine_report():
        parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--nodes", type=int, default=1000)
        parser.add_argument("--interval", type=float, default=5.0, help="heartbeat interval, seconds")
        parser.add_argument("--window", type=float, default=30.0, help="measurement window, seconds")
        parser.add_argument("--lost-after", type=float, default=15.0)
        trio.run(main, parser.parse_args())
