"""Limiter accuracy across planes: one key at RPM driven through several real planes sharing one Redis.

    python bench/_scale_limits.py [--planes 2] [--rpm 600] [--seconds 60] [--offered 2.0] [--transport-only]

Starts its own redis-server (no persistence) and `--planes` real `flowctl up --redis URL`
processes (each a plane with a local node and the echo worker), all holding the same API key
(one gateway.db seeded before they start, as a shared state database would hold it) limited to
`--rpm` requests/minute. It offers `--offered` times the limit, spread evenly over the planes,
until the key's burst is spent (the first 429), then for `--seconds` more, and prints the
requests admitted in that window per minute against the limit, the error, and whether the total
ever exceeded rate * time + burst. Then the Redis transport: the limiter's decision script
through the RESP client on trio sockets vs redis-py's sync client through trio.to_thread, the
peer measured in the same run. bench/scale.py calls `measure(...)`; tests/runtime/dispatch/
test_redis_planes.py drives the same `open_planes` and `drive` for issue 18's case.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ECHO = ROOT / "examples" / "echo"
ADMIN = "scale-limits-admin-key"
START_TIMEOUT = 120.0
CHAT = json.dumps({"model": "echo", "messages": [{"role": "user", "content": "hi"}]}).encode()


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed_key(dirs: list[Path], rpm: int) -> str:
    """One tenant and one key limited to `rpm`, in the gateway.db of every data dir (the same key)."""
    from runtime.dispatch.limits import Limits
    from runtime.gateway.keys import KeyStore

    for d in dirs:
        d.mkdir(mode=0o700, parents=True)
    store = KeyStore(dirs[0] / "gateway.db")
    try:
        store.create_tenant("acme")
        key, _ = store.create_key("acme", name="shared", limits=Limits(rpm=rpm))
    finally:
        store.close()
    for d in dirs[1:]:
        shutil.copy2(dirs[0] / "gateway.db", d / "gateway.db")
    return key


@dataclass
class Planes:
    """The running planes: their URLs and the key they share."""

    urls: list[str]
    key: str
    processes: list[trio.Process] = field(default_factory=list)


def _env(port: int) -> dict[str, str]:
    return {**os.environ, "FLOWCTL_ADMIN_KEY": ADMIN, "FLOWCTL_TOKEN": ADMIN,
            "FLOWCTL_SERVER": f"http://127.0.0.1:{port}", "FLOWCTL_CONFIG": "/nonexistent/flowctl.toml",
            "PYTHONUNBUFFERED": "1"}


async def _cli(*args: str, port: int) -> str:
    done = await trio.run_process([sys.executable, "-m", "flowctl", *args], capture_stdout=True,
                                  capture_stderr=True, check=False, env=_env(port), stdin=subprocess.DEVNULL,
                                  cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"flowctl {' '.join(args)} failed: {done.stderr.decode()[-2000:]}")
    return done.stdout.decode()


async def _ready(url: str) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            try:
                if (await client.get(f"{url}/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await trio.sleep(0.1)


@asynccontextmanager
async def open_planes(work: Path, redis_url: str, *, count: int = 2, rpm: int = 600) -> AsyncIterator[Planes]:
    """`count` `flowctl up --redis` processes with echo deployed and one shared key; stopped on exit."""
    from packer import pack_dir

    dirs = [work / f"plane{i}" for i in range(count)]
    key = await trio.to_thread.run_sync(seed_key, dirs, rpm)
    bundle = await trio.to_thread.run_sync(pack_dir, ECHO, work / "dist")
    planes = Planes([], key)
    logs = []
    async with trio.open_nursery() as nursery:
        try:
            for i, d in enumerate(dirs):
                port = free_port()
                log = open(work / f"plane{i}.log", "wb")  # noqa: ASYNC230 - the child writes it all its life
                logs.append(log)
                proc = await nursery.start(partial(
                    trio.run_process, [sys.executable, "-m", "flowctl", "up", "--port", str(port), "--data-dir",
                                       str(d), "--name", f"plane{i}", "--redis", redis_url],
                    check=False, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=_env(port),
                    cwd=ROOT))
                planes.processes.append(proc)
                planes.urls.append(f"http://127.0.0.1:{port}")
            with trio.fail_after(START_TIMEOUT):
                for url in planes.urls:
                    await _ready(url)
                    port = int(url.rsplit(":", 1)[1])
                    await _cli("publish", str(bundle.path), "--hub", url, port=port)
                    await _cli("deploy", "echo", "--json", port=port)
                    await _until_routed(url, planes.key)
            yield planes
        finally:
            with trio.CancelScope(shield=True):
                for proc in planes.processes:
                    if proc.returncode is None:
                        proc.send_signal(signal.SIGTERM)  # flowctl up stops its worker on the way out
                with trio.move_on_after(30):
                    for proc in planes.processes:
                        await proc.wait()
            nursery.cancel_scope.cancel()
            for log in logs:
                log.close()


async def _until_routed(url: str, key: str) -> None:
    """The plane answers a chat request with something other than 503 (its replica is ready)."""
    import httpx

    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            r = await client.get(f"{url}/api/cluster/status", headers={"Authorization": f"Bearer {ADMIN}"})
            if r.status_code == 200 and any(d.get("ready") for d in r.json().get("deployments", [])):
                return
            await trio.sleep(0.1)


@dataclass
class Drive:
    """What `drive` saw: each request's send time (trio.current_time()) and status, and when its reply came."""

    sent: list[tuple[float, int]] = field(default_factory=list)
    received: list[float] = field(default_factory=list)  # of the admitted (200) requests
    errors: list[str] = field(default_factory=list)  # requests without an HTTP answer (status 0)
    window_start: float | None = None
    window_end: float | None = None

    def statuses(self) -> dict[int, int]:
        """How many requests got each status."""
        out: dict[int, int] = {}
        for _, status in self.sent:
            out[status] = out.get(status, 0) + 1
        return out

    def admitted_in_window(self) -> int:
        """Requests admitted (200) among those sent within the window."""
        assert self.window_start is not None and self.window_end is not None
        return sum(1 for t, s in self.sent if s == 200 and self.window_start <= t < self.window_end)

    def worst_excess(self, rpm: int) -> float:
        """max over the run of admitted - (rate * elapsed + burst): <= 0 when never above.

        Counted by the time each reply arrived from the first request's send: a request is
        admitted (in Redis) after the first was sent and before its reply arrives, so this can
        only overstate the admitted count at any instant, never hide an excess."""
        from runtime.dispatch.limits import burst_for

        admitted = sorted(self.received)
        if not admitted:
            return -float(burst_for(rpm))
        first = min(t for t, _ in self.sent)
        return max(i + 1 - (rpm / 60.0 * (t - first) + burst_for(rpm)) for i, t in enumerate(admitted))


async def drive(urls: list[str], key: str, *, rpm: int, offered: float, seconds: float) -> Drive:
    """Offer `offered` x the limit round-robin over the planes until the first 429, then `seconds` more."""
    import httpx

    result = Drive()
    interval = 60.0 / (rpm * offered)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    # Idle connections are dropped before the plane's keep-alive timeout (5 s) can close one as it is reused.
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=2.0)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def one(url: str, at: float) -> None:
            try:
                r = await client.post(f"{url}/v1/chat/completions", content=CHAT, headers=headers)
                status = r.status_code
                if status not in (200, 429):
                    result.errors.append(f"{status} from {url}: {r.text[:300]}")
            except httpx.HTTPError as exc:
                status = 0
                result.errors.append(f"{type(exc).__name__}: {exc}")
            result.sent.append((at, status))
            if status == 200:
                result.received.append(trio.current_time())
            if status == 429 and result.window_start is None:
                result.window_start = at
                result.window_end = at + seconds

        async with trio.open_nursery() as nursery:
            began = trio.current_time()
            i = 0
            while result.window_end is None or trio.current_time() < result.window_end:
                at = began + i * interval
                await trio.sleep_until(at)
                nursery.start_soon(one, urls[i % len(urls)], trio.current_time())
                i += 1
                if result.window_end is None and trio.current_time() - began > 120:
                    raise RuntimeError("no request was refused in 120 s: is the limit applied?")
            # The nursery waits for the requests still in flight; each counts by its send time.
    return result


async def transport(redis_url: str, calls: int = 2000, tasks: int = 16) -> list[str]:
    """The ADMIT script per call: RESP on trio sockets vs redis-py's sync client through trio.to_thread."""
    from runtime.dispatch.redis_scripts import SCRIPTS
    from runtime.dispatch.resp import RespClient

    script = SCRIPTS["admit"]
    # One GCRA key (no slot, no tokens): ARGV slot id, lease, slot sets 0, buckets 0, interval, tolerance.
    args = ["flowctl:limits:{bench}:r:key:k", "", 0, 0, 0, "100.0", "0.0"]
    lines = []
    client = RespClient(redis_url)
    await client.execute("SCRIPT", "LOAD", script.source)

    async def resp_call() -> None:
        await client.execute("EVALSHA", script.sha, 1, *args[:1], *args[1:])

    try:
        import redis
    except ImportError:
        redis = None
    sync = redis.Redis.from_url(redis_url, max_connections=tasks) if redis is not None else None
    limiter = trio.CapacityLimiter(tasks)

    async def thread_call() -> None:
        assert sync is not None
        await trio.to_thread.run_sync(partial(sync.evalsha, script.sha, 1, *args[:1], *args[1:]), limiter=limiter)

    peers = [("RESP on trio sockets", resp_call)] + ([("redis-py via to_thread", thread_call)] if sync else [])
    figures: dict[str, tuple[float, float]] = {}
    for name, call in peers:
        for _ in range(50):  # warm-up: connections open, the script cached
            await call()
        began = time.perf_counter()
        for _ in range(calls):
            await call()
        sequential = (time.perf_counter() - began) / calls * 1e6

        async def worker(n: int, call=call) -> None:
            for _ in range(n):
                await call()

        began, cpu = time.perf_counter(), time.process_time()
        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(worker, calls // tasks)
        done = calls // tasks * tasks
        concurrent = done / (time.perf_counter() - began)
        cpu_per_call = (time.process_time() - cpu) / done * 1e6  # this process's CPU, its threads included
        figures[name] = (sequential, concurrent, cpu_per_call)
        lines.append(f"  {name:<24} {sequential:6.0f} us/call one at a time; with {tasks} tasks {concurrent:6.0f} "
                     f"calls/s, {cpu_per_call:4.0f} us CPU/call")
    if len(figures) == 2:
        (a_seq, a_con, a_cpu), (b_seq, b_con, b_cpu) = figures.values()
        lines.append(f"  ratio trio/thread: latency {a_seq / b_seq:.2f}x, throughput {a_con / b_con:.2f}x, "
                     f"CPU per call {a_cpu / b_cpu:.2f}x")
    await client.aclose()
    if sync is not None:
        sync.close()
    return lines


async def per_request_cost(redis_url: str, requests: int = 500) -> list[str]:
    """A fully limited key's admission (slot and rates in one call, then charge and release), one request after
    another: Redis round trips per request, and this process's CPU per request with the in-process Limiter vs
    Redis. (A request whose body is still arriving takes its slot first and its rates later: two calls.)"""
    from runtime.dispatch.limits import Limiter, Limits, Principal
    from runtime.dispatch.redis_limits import RedisLimiter
    from runtime.dispatch.resp import RespClient

    who = Principal("rt", "k", key_limits=Limits(rpm=10**6, tpm=10**9, max_concurrency=100))

    async def admit(limiter) -> float:
        cpu = time.process_time()
        for _ in range(requests):
            slot = await limiter.admit_slot(who)  # the slot and the rates together, as the gateway takes them
            limiter.charge(who, 50)
            limiter.give_slot(who, slot)
        return (time.process_time() - cpu) / requests * 1e6

    local = await admit(Limiter())
    shared = RedisLimiter(redis_url)
    async with trio.open_nursery() as nursery:
        await nursery.start(shared.run)
        await admit(shared)  # warm-up: connection open, scripts loaded
        shared.round_trips = 0
        remote = await admit(shared)
        sequential_trips = shared.round_trips / requests

        async def client() -> None:  # one of 16 clients, each request taking 2 ms on the replica
            for _ in range(requests // 16):
                slot = await shared.admit_slot(who)
                await trio.sleep(0.002)
                shared.charge(who, 50)
                shared.give_slot(who, slot)

        await trio.sleep(0.2)
        shared.round_trips = 0
        async with trio.open_nursery() as clients:
            for _ in range(16):
                clients.start_soon(client)
        await trio.sleep(0.2)  # the last release and charge are flushed
        concurrent_trips = shared.round_trips / (requests // 16 * 16)
        nursery.cancel_scope.cancel()
    client = RespClient(redis_url)
    stats = (await client.execute("INFO", "commandstats")).decode()
    await client.aclose()
    # Redis's own time per script (usec_per_call of EVALSHA, over everything this bench ran): what
    # bounds one Redis core, whatever the network.
    usec = next((float(part.split("=")[1]) for line in stats.splitlines() if line.startswith("cmdstat_evalsha:")
                 for part in line.split(":", 1)[1].split(",") if part.startswith("usec_per_call=")), float("nan"))
    return [f"  Redis round trips per request (rpm + tpm + concurrency limited key): {sequential_trips:.2f} one "
            f"after another, {concurrent_trips:.2f} from 16 concurrent clients; Redis CPU per script call {usec:.1f} us "
            f"(one Redis core: ~{1e6 / usec:,.0f} script calls/s)",
            f"  plane CPU per request for admission: in-process Limiter {local:.0f} us, Redis {remote:.0f} us "
            f"(+{remote - local:.0f} us per request)"]


def start_redis(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server without persistence on a free port (the bench's own)."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(work)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


async def measure(work: Path, redis_url: str, *, planes: int = 2, rpm: int = 600, seconds: float = 60.0,
                  offered: float = 2.0, accuracy: bool = True) -> list[str]:
    """The figure lines: accuracy across planes (unless `accuracy` is False), transport, round trips."""
    from runtime.dispatch.limits import burst_for

    lines = []
    if accuracy:
        async with open_planes(work, redis_url, count=planes, rpm=rpm) as running:
            result = await drive(running.urls, running.key, rpm=rpm, offered=offered, seconds=seconds)
        admitted = result.admitted_in_window()
        per_min = admitted * 60.0 / seconds
        lines += [
            f"limiter accuracy: one key at {rpm} rpm through {planes} planes sharing one Redis, offered "
            f"{offered:g}x the limit for {seconds:g} s after the burst of {burst_for(rpm)}:",
            f"  admitted {admitted} in {seconds:g} s = {per_min:.1f}/min, error {100 * (per_min - rpm) / rpm:+.2f}% "
            f"(target within 5%)",
            f"  never above rate*time + burst: {result.worst_excess(rpm) <= 0} "
            f"(closest: {result.worst_excess(rpm):+.1f} requests)",
            f"  statuses: {json.dumps(result.statuses(), sort_keys=True)}",
        ]
    lines.append("Redis transport (the limiter's GCRA script, same Redis, same run):")
    lines += await transport(redis_url)
    lines += await per_request_cost(redis_url)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--planes", type=int, default=2, help="plane processes sharing the Redis (default 2)")
    parser.add_argument("--rpm", type=int, default=600, help="the key's requests/minute (default 600)")
    parser.add_argument("--seconds", type=float, default=60.0, help="the measured window (default 60)")
    parser.add_argument("--offered", type=float, default=2.0, help="offered load as a multiple of the limit")
    parser.add_argument("--transport-only", action="store_true", help="skip the planes; Redis transport only")
    args = parser.parse_args()
    from bench._machine import machine_report

    with machine_report(), tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        redis_proc, url = start_redis(work)
        try:
            for line in trio.run(partial(measure, work, url, planes=args.planes, rpm=args.rpm, seconds=args.seconds,
                                         offered=args.offered, accuracy=not args.transport_only)):
                print(line, flush=True)
        finally:
            redis_proc.kill()
            redis_proc.wait()


if __name__ == "__main__":
    main()
