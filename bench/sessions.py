"""Realtime sessions benchmark: memory per idle session and text round trips (issue 7).

    python bench/sessions.py [--sessions 1000] [--active 100] [--round-trips 1000]

A child process serves the plane (hub + scheduler + gateway) and a node agent in front of
the echo worker (its own process), through the real node tunnel (bench/_cluster.py). This
process is the load generator:

  1. memory: the served process's RSS (VmRSS in /proc) after a warm-up session, then after
     SESSIONS sessions are created and each holds an open WebSocket, idle;
  2. round trips, with ACTIVE of those sessions talking (the others stay open and idle):
     {"type": "text"} sent, timed until the reply's final `text` (`done: true`), one at a
     time round-robin over the ACTIVE sessions (latency), then ACTIVE at once (load).

Targets: SESSIONS=1,000 under 200 MB added RSS; echo round trip p50 under 5 ms at 100 sessions.
Everything is bounded in time; children are stopped and the temp directory removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._cluster import start_cluster, stop  # noqa: E402
from bench._machine import machine_report  # noqa: E402

ECHO = ROOT / "examples" / "echo"
TIME_LIMIT_S = 600.0
OPEN_AT_ONCE = 32  # creates and WebSocket handshakes in flight


def rss_kib(pid: int) -> int:
    """Resident set size of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_s(pid: int) -> float:
    """User + system CPU time a process has used, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_fd_limit(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards the hard limit (children inherit it); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        soft = hard if hard == resource.RLIM_INFINITY else max(soft, min(hard, needed))
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def start_echo(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """The echo worker on a free port; returns it and its URL."""
    proc = subprocess.Popen([sys.executable, "worker.py"], cwd=ECHO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL,
                            env={**os.environ, "FLOWCTL_PORT": "0", "PYTHONUNBUFFERED": "1", **env})
    line = proc.stdout.readline().decode() if proc.stdout else ""
    if " listening on " not in line:
        stop(proc)
        raise RuntimeError("the echo worker did not start")
    return proc, line.split(" listening on ")[1].split()[0]


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-quantile (0..1) of sorted values, nearest rank below."""
    return sorted_values[int(q * (len(sorted_values) - 1))]


async def round_trip(ws: WebSocketConnection, text: str) -> float:
    """Send one text utterance; seconds until its final `text` message."""
    began = time.perf_counter()
    await ws.send_message(json.dumps({"type": "text", "content": text}))
    while True:
        message = json.loads(await ws.get_message())
        if message["type"] == "text" and (message.get("done") or message.get("cancelled")):
            return time.perf_counter() - began
        if message["type"] == "error":
            raise RuntimeError(f"session error: {message['content']}")


class Sessions:
    """Creates sessions and holds one open WebSocket per session until told to stop."""

    def __init__(self, client: httpx.AsyncClient):
        self.client = client
        self.open: list[WebSocketConnection] = []
        self.done = trio.Event()
        self._opening = trio.Semaphore(OPEN_AT_ONCE)

    async def create(self) -> str:
        """A new session; its WebSocket URL with the engine token."""
        r = await self.client.post("/v1/sessions", json={"model": "echo"})
        if r.status_code != 201:
            raise RuntimeError(f"create answered {r.status_code}: {r.text[:200]}")
        created = r.json()
        return f"{created['engine_url']}?token={created['engine_token']}"

    async def hold(self, *, task_status: trio.TaskStatus[WebSocketConnection] = trio.TASK_STATUS_IGNORED) -> None:
        """Create a session, open its WebSocket, report it started, keep it open until `done`."""
        await self._opening.acquire()
        opening = True
        try:
            url = await self.create()
            async with open_websocket_url(url) as ws:
                self._opening.release()
                opening = False
                self.open.append(ws)
                task_status.started(ws)
                await self.done.wait()
        finally:
            if opening:
                self._opening.release()


async def sequential(sockets: list[WebSocketConnection], count: int) -> list[float]:
    """`count` round trips, one at a time, round-robin over the sockets."""
    return [await round_trip(sockets[i % len(sockets)], f"hello number {i}") for i in range(count)]


async def concurrent(sockets: list[WebSocketConnection], count: int) -> tuple[list[float], float]:
    """Every socket does count/len(sockets) round trips, all sockets at once; latencies and wall time."""
    latencies: list[float] = []
    each = max(1, count // len(sockets))

    async def talk(ws: WebSocketConnection, n: int) -> None:
        for i in range(each):
            latencies.append(await round_trip(ws, f"hello {n} {i}"))

    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for n, ws in enumerate(sockets):
            nursery.start_soon(talk, ws, n)
    return latencies, time.perf_counter() - began


async def direct(worker_url: str, count: int) -> list[float]:
    """The floor: the same streamed echo chat straight to the worker over HTTP, one at a time."""
    latencies = []
    async with httpx.AsyncClient(base_url=worker_url, timeout=30) as client:
        for i in range(count):
            body = {"model": "echo", "stream": True, "messages": [{"role": "user", "content": f"hello number {i}"}]}
            began = time.perf_counter()
            async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                async for _ in r.aiter_lines():
                    pass
            latencies.append(time.perf_counter() - began)
    return latencies


def latency_row(name: str, latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    p50, p99 = 1000 * statistics.median(ordered), 1000 * percentile(ordered, 0.99)
    print(f"  {name:<44} n={len(ordered):5d}   p50 {p50:7.2f} ms   p99 {p99:7.2f} ms")
    return p50, p99


async def bench(info: dict, sessions: int, active: int, round_trips: int) -> None:
    pid = info["pid"]
    headers = {"Authorization": f"Bearer {info['key']}"}
    limits = httpx.Limits(max_connections=OPEN_AT_ONCE, max_keepalive_connections=OPEN_AT_ONCE)
    async with httpx.AsyncClient(base_url=info["gateway"], headers=headers, timeout=30, limits=limits) as client:
        holder = Sessions(client)
        async with trio.open_nursery() as nursery:
            # Warm-up: one session end to end, so first-use allocations are not counted per session.
            warm = await nursery.start(holder.hold)
            for i in range(20):
                await round_trip(warm, f"warm-up {i}")
            await trio.sleep(0.5)
            base = rss_kib(pid)
            print(f"served process (pid {pid}) RSS with 1 session: {base / 1024:.1f} MB")

            began = time.perf_counter()
            for _ in range(sessions - 1):
                nursery.start_soon(holder.hold)
            while len(holder.open) < sessions:  # noqa: ASYNC110 - the holders run in other tasks
                await trio.sleep(0.05)
            opened_s = time.perf_counter() - began
            await trio.sleep(1.0)  # let the server finish its side of the last handshakes
            listed = (await client.get("/v1/sessions")).json()
            full = rss_kib(pid)
            added_mb = (full - base) / 1024
            per_kib = (full - base) / (sessions - 1)
            print(f"{sessions} sessions, each with an open idle WebSocket (created and connected in "
                  f"{opened_s:.1f} s; the gateway counts {listed['active_sessions']} active):")
            print(f"  RSS {full / 1024:.1f} MB: added {added_mb:.1f} MB for {sessions - 1} sessions, "
                  f"{per_kib:.1f} KB per session")
            print(f"  projected for 1,000 sessions: {per_kib * 1000 / 1024:.1f} MB added (target < 200 MB)")

            talking = holder.open[:active]
            print(f"text round trips, {active} sessions active, {sessions - active} more open and idle:")
            for ws in talking:  # the first utterance of each session pins it to the replica
                await round_trip(ws, "first")
            cpu = cpu_s(pid)
            seq_p50, _ = latency_row(f"one at a time, round-robin over {active}", await sequential(talking, round_trips))
            cpu_ms = 1000 * (cpu_s(pid) - cpu) / round_trips
            latencies, wall = await concurrent(talking, round_trips)
            latency_row(f"{active} at once ({len(latencies) / wall:,.0f} round trips/s)", latencies)
            latency_row("floor: streamed chat direct to the worker", await direct(info["worker"], round_trips))
            print(f"  served process CPU per round trip: {cpu_ms:.2f} ms")
            print(f"  p50 one at a time: {seq_p50:.2f} ms (target < 5 ms)")
            print(f"served process RSS at the end: {rss_kib(pid) / 1024:.1f} MB")
            holder.done.set()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--active", type=int, default=100)
    parser.add_argument("--round-trips", type=int, default=1000)
    args = parser.parse_args()
    if not 2 <= args.active <= args.sessions:
        parser.error("need 2 <= --active <= --sessions")
    # Each session is one socket here and one in the served process, plus files and the tunnel.
    limit = raise_fd_limit(args.sessions + 256)
    if limit < args.sessions + 64:
        print(f"the open-files limit is {limit}: too low for {args.sessions} sessions", file=sys.stderr)
        return 1
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="sessions-bench-") as tmp:
        try:
            worker, worker_url = start_echo({"ECHO_MAX_CONCURRENCY": str(max(64, args.active))})
            procs.append(worker)
            served, info = start_cluster(Path(tmp), ECHO, worker_url, max_concurrency=max(64, args.active),
                                         max_sessions=args.sessions + 16)
            info["worker"] = worker_url
            procs.append(served)

            async def run() -> None:
                with trio.fail_after(TIME_LIMIT_S):
                    await bench(info, args.sessions, args.active, args.round_trips)

            trio.run(run)
        finally:
            for proc in reversed(procs):
                stop(proc)
    return 0


if __name__ == "__main__":
    with machine_report():
        sys.exit(main())
