"""Benchmark: three planes on one PostgreSQL against one, failover, re-attach, and a simulated fleet.

Starts a real PostgreSQL (tests/engines/postgres.py's server: an unprivileged user, a temp dir, a
free port; or `--state URL` for one of yours), three `flowctl serve` planes on it (shared data
dir for blobs) and one real node (`flowctl node join` attached to all three, the echo worker
deployed), then reports, from one run:

- gateway req/s and p50 at concurrency C through one plane vs spread round-robin over the three
  (same cluster, same run; on 2 cores expect no gain: the figure is the overhead of the shared
  state, target spread >= 0.85x one plane);
- node re-attach time: a follower plane SIGKILLed and started again on its port, until the node
  is back on it and a request through it is served;
- leader failover time: the leader SIGKILLed, until another plane reports leading;
- limiter accuracy across planes: bench/_scale_limits.py (one key at 600 rpm through two planes
  on one Redis; needs redis-server; `--limits-seconds 0` skips it);
- N simulated nodes (default 1,000) each attached to all three planes (3N WebSockets, real
  control protocol): each plane's CPU and PostgreSQL's commits and row writes per second
  (pg_stat_database deltas over the window).

Everything it starts is stopped at the end, on Ctrl-C and on SIGTERM.

    .venv/bin/python bench/scale.py
    .venv/bin/python bench/scale.py --nodes 200 --seconds 5 --window 10 --limits-seconds 0   # smoke run
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path

import httpx
import trio
import trio_websocket

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._machine import cpu_seconds, die_with_parent, machine_report  # noqa: E402
from bench.cluster import free_port, raise_fd_limit  # noqa: E402
from packer import pack_dir  # noqa: E402
from runtime.control import messages  # noqa: E402
from runtime.control.messages import Heartbeat, Hello, Welcome  # noqa: E402
from runtime.tunnel import TunnelError, open_mux  # noqa: E402

ADMIN = "bench-scale-admin"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
BODY = {"model": "echo", "messages": [{"role": "user", "content": "hello there, plane"}]}


class _Skip(Exception):
    """--fleet-only: the three-plane part is not run."""


class Fleet:
    """The planes and the node of the run, as child processes."""

    def __init__(self, work: Path, state: str, ttl: float, *, heartbeat_s: float = 1.0, lost_after_s: float = 5.0):
        # The failover parts want a node's loss noticed fast; the simulated fleet wants production's pace.
        self.work, self.state, self.ttl = work, state, ttl
        self.heartbeat_s, self.lost_after_s = heartbeat_s, lost_after_s
        self.env = {**os.environ, "FLOWCTL_ADMIN_KEY": ADMIN, "FLOWCTL_CONFIG": "/nonexistent/flowctl.toml"}
        self.planes: dict[str, tuple[subprocess.Popen, str, int]] = {}
        self.node: subprocess.Popen | None = None

    def start_plane(self, name: str, port: int | None = None) -> str:
        port = port or free_port()
        log = open(self.work / f"plane-{name}.log", "ab")  # the child keeps it
        proc = subprocess.Popen(
            [sys.executable, "-m", "flowctl", "serve", "--roles", "hub,scheduler,gateway,jobs", "--port", str(port),
             "--data-dir", str(self.work / "data"), "--state", self.state, "--plane-name", name,
             "--leader-ttl", str(self.ttl), "--heartbeat-interval", str(self.heartbeat_s),
             "--lost-after", str(self.lost_after_s),
             "--anonymous-tenant", "bench"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
            preexec_fn=die_with_parent)
        log.close()
        url = f"http://127.0.0.1:{port}"
        self.planes[name] = (proc, url, port)
        return url

    def start_node(self, token: str) -> None:
        """The real node, attached to planes a, b and c."""
        log = open(self.work / "node.log", "ab")  # the child keeps it
        self.node = subprocess.Popen(
            [sys.executable, "-m", "flowctl", "node", "join", ",".join(self.url(n) for n in "abc"), "--token", token,
             "--data-dir", str(self.work / "node")],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
            preexec_fn=die_with_parent)
        log.close()

    def url(self, name: str) -> str:
        return self.planes[name][1]

    def stop(self) -> None:
        procs = [p for p, _, _ in self.planes.values()] + ([self.node] if self.node else [])
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        deadline = time.monotonic() + 20
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def health(client: httpx.AsyncClient, url: str) -> dict | None:
    try:
        r = await client.get(url + "/health", timeout=2)
        return r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


async def until(predicate, *, within: float, what: str, interval: float = 0.05):
    """Poll the async `predicate` until it returns a true value; RuntimeError naming `what` after `within` s."""
    with trio.move_on_after(within):
        while not (found := await predicate()):  # noqa: ASYNC110 - the state lives in other processes
            await trio.sleep(interval)
        return found
    raise RuntimeError(f"{what}: not within {within:g} s")


async def leader(client: httpx.AsyncClient, fleet: Fleet) -> str | None:
    for name, (proc, url, _) in fleet.planes.items():
        h = await health(client, url) if proc.poll() is None else None
        if h is not None and h["roles"]["scheduler"].get("leader"):
            return name
    return None


async def serves(client: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await client.post(url + "/v1/chat/completions", json=BODY, timeout=5)).status_code == 200
    except httpx.HTTPError:
        return False


async def setup(fleet: Fleet, client: httpx.AsyncClient) -> None:
    """Three planes (a leads), echo published and deployed, one node on all three, served everywhere."""
    for name in ("a", "b", "c"):
        url = fleet.start_plane(name)
        await until(lambda url=url: health(client, url), within=60, what=f"plane {name} up")
        if name == "a":
            await until(lambda: leader(client, fleet), within=30, what="a leader")
    a = fleet.url("a")
    bundle = pack_dir(ROOT / "examples" / "echo", fleet.work / "dist")
    r = await client.put(a + "/api/services/echo/1.0.0", headers=AUTH, content=bundle.path.read_bytes())
    r.raise_for_status()
    token = (await client.post(a + "/api/cluster/tokens", headers=AUTH, json={"name": "bench"})).json()["token"]
    fleet.start_node(token)
    r = await client.post(a + "/api/deployments", headers=AUTH, json={"service": "echo", "replicas": 1})
    r.raise_for_status()
    for name in "abc":
        await until(lambda name=name: serves(client, fleet.url(name)), within=120, what=f"echo served via {name}")


async def drive(urls: list[str], *, concurrency: int, seconds: float) -> tuple[float, float, int, int]:
    """(req/s, p50 ms, errors, requests served) of `concurrency` clients spreading requests round-robin over `urls`."""
    latencies: list[float] = []
    errors = 0
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency * 2)) as client:
        end = time.perf_counter() + seconds

        async def worker(n: int) -> None:
            nonlocal errors
            i = n
            while time.perf_counter() < end:
                url = urls[i % len(urls)]
                i += 1
                t0 = time.perf_counter()
                try:
                    ok = (await client.post(url + "/v1/chat/completions", json=BODY)).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for n in range(concurrency):
                nursery.start_soon(worker, n)
        took = time.perf_counter() - started
    p50 = statistics.median(latencies) * 1000 if latencies else float("nan")
    return len(latencies) / took, p50, errors, len(latencies)


FAILED: list[str] = []


async def sim_node(urls: list[str], token: str, index: int, ready: trio.Semaphore) -> None:
    """A simulated node attached to every plane; one that cannot attach is counted in FAILED, not fatal."""
    try:
        await _sim_node(urls, token, index, ready)
    except* (OSError, TunnelError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed,
             trio_websocket.ConnectionRejected) as group:
        FAILED.append(str(group.exceptions[0]) or type(group.exceptions[0]).__name__)
        ready.release()


async def _sim_node(urls: list[str], token: str, index: int, ready: trio.Semaphore) -> None:
    """Enrolls through the first plane, then attaches to the others with its credential."""
    bearer = token
    links = []
    async with AsyncExitStack() as stack:
        for url in urls:
            ws_url = url.replace("http://", "ws://") + "/api/cluster/connect"
            ws = await stack.enter_async_context(trio_websocket.open_websocket_url(
                ws_url, extra_headers=[("Authorization", f"Bearer {bearer}")], connect_timeout=60))
            mux = await stack.enter_async_context(open_mux(ws, opener=True))
            hello = Hello(node_id=f"sim{index:05d}", name=f"sim-{index:05d}", agent_version="bench",
                          cpu_count=8, ram_mb=32000)
            await mux.send_control(messages.encode(hello))
            welcome = messages.decode_plane_message(await mux.receive_control())
            if not isinstance(welcome, Welcome):
                raise OSError(f"refused by {url}: {getattr(welcome, 'message', welcome)}")
            bearer = welcome.credential or bearer
            links.append((mux, welcome.heartbeat_interval_s))
        ready.release()
        async with trio.open_nursery() as nursery:
            for mux, interval in links:
                nursery.start_soon(_beat, mux, interval)


async def _beat(mux, interval: float) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_drain, mux)
        seq = 0
        await trio.sleep(interval * (hash(id(mux)) % 1000) / 1000)  # spread like real nodes
        while True:
            seq += 1
            await mux.send_control(messages.encode(Heartbeat(seq=seq, free_ram_mb=16000)))
            await trio.sleep(interval)


async def _drain(mux) -> None:
    while True:
        await mux.receive_control()


def pg_counters(url: str) -> tuple[int, int]:
    """(xact_commit, tup_inserted + tup_updated + tup_deleted) of the database in `url`."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT xact_commit, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database "
                           "WHERE datname = current_database()").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def main(args: argparse.Namespace) -> None:
    raise_fd_limit(args.nodes * 6 + 512)
    work = Path(tempfile.mkdtemp(prefix="flowctl-bench-scale-"))
    server = None
    try:
        state = args.state
        if state is None:
            sys.path.insert(0, str(ROOT))
            from tests.engines.postgres import PostgresServer, _bin_dir, _run_as

            bin_dir = _bin_dir()
            if bin_dir is None:
                raise SystemExit("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin): pass --state URL")
            user = _run_as()
            root = Path(tempfile.mkdtemp(prefix="flowctl-bench-pg-"))
            if user is not None:
                os.chown(root, user.pw_uid, user.pw_gid)
            server = PostgresServer(bin_dir, root, user)
            await trio.to_thread.run_sync(server.init)
            await trio.to_thread.run_sync(server.start)
            state = server.url(await trio.to_thread.run_sync(server.create_database))
        print(f"state: PostgreSQL at {state.split('@')[-1]}; three planes, leader lease {args.ttl:g} s")
        fleet = Fleet(work, state, args.ttl)
        try:
            if args.fleet_only:
                raise _Skip
            async with httpx.AsyncClient(timeout=30) as client:
                await setup(fleet, client)
                urls = [fleet.url(n) for n in "abc"]
                await drive(urls, concurrency=args.concurrency, seconds=1)  # warm every path
                assert fleet.node is not None
                served = [proc.pid for proc, _, _ in fleet.planes.values()] + [fleet.node.pid]
                cpu0 = sum(map(cpu_seconds, served))
                one = await drive(urls[:1], concurrency=args.concurrency, seconds=args.seconds)
                cpu1 = sum(map(cpu_seconds, served))
                spread = await drive(urls, concurrency=args.concurrency, seconds=args.seconds)
                cpu2 = sum(map(cpu_seconds, served))
                print(f"gateway, echo, c={args.concurrency}, {args.seconds:g} s each (one node, the load generator "
                      "on this box too):")
                print(f"  through one plane:          {one[0]:8.1f} req/s, p50 {one[1]:6.2f} ms, errors {one[2]}")
                print(f"  spread over three planes:   {spread[0]:8.1f} req/s, p50 {spread[1]:6.2f} ms, "
                      f"errors {spread[2]}")
                ratio = spread[0] / one[0] if one[0] else float("nan")
                print(f"  spread / one: {ratio:.2f}x (target >= 0.85x: {'met' if ratio >= 0.85 else 'missed'})")
                # The planes' and the node's CPU per request: whether spreading costs work or only waiting.
                per_one = (cpu1 - cpu0) / max(1, one[3]) * 1000
                per_spread = (cpu2 - cpu1) / max(1, spread[3]) * 1000
                print(f"  planes + node CPU per request: one plane {per_one:.2f} ms, spread {per_spread:.2f} ms "
                      f"({per_spread / per_one if per_one else float('nan'):.2f}x)")

                # Node re-attach: a follower killed and started again on its own port.
                proc, url, port = fleet.planes["c"]
                proc.kill()
                proc.wait()
                fleet.start_plane("c", port)
                back = time.perf_counter()
                await until(lambda: health(client, url), within=60, what="plane c back")
                up = time.perf_counter()
                await until(lambda: serves(client, url), within=120, what="the node back on plane c")
                print(f"node re-attach: plane c SIGKILLed and restarted; up in {up - back:.2f} s, the node back on "
                      f"it and a request served {time.perf_counter() - up:.2f} s later (node backoff 0.5 s doubling, "
                      "full jitter)")

                # Leader failover.
                first = await until(lambda: leader(client, fleet), within=30, what="a leader")
                fleet.planes[first][0].kill()
                fleet.planes[first][0].wait()
                killed = time.perf_counter()
                new = await until(lambda: leader(client, fleet), within=args.ttl + 30, what="a new leader",
                                  interval=0.02)
                took = time.perf_counter() - killed
                print(f"leader failover: {first} SIGKILLed, {new} leads {took:.2f} s later (lease {args.ttl:g} s, "
                      f"target <= TTL + 2 s: {'met' if took <= args.ttl + 2 else 'missed'})")
        except _Skip:
            pass
        finally:
            fleet.stop()

        if args.limits_seconds > 0 and not args.fleet_only:
            if shutil.which("redis-server") is None:
                print("limiter accuracy: not measured (no redis-server)")
            else:
                from bench import _scale_limits

                redis_proc, redis_url = _scale_limits.start_redis(work)
                try:
                    for line in await _scale_limits.measure(work / "limits", redis_url, planes=2, rpm=600,
                                                            seconds=args.limits_seconds):
                        print(line)
                finally:
                    redis_proc.kill()
                    redis_proc.wait()

        if args.nodes > 0:
            if server is not None:  # a fresh database: the fleet's writes alone
                state = server.url(await trio.to_thread.run_sync(server.create_database))
            await fleet_part(args, work, state)
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(server.root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


async def fleet_part(args: argparse.Namespace, work: Path, state: str) -> None:
    """N simulated nodes on three fresh planes: plane CPU and PostgreSQL writes per second."""
    sim = Fleet(work / "sim", state, args.ttl, heartbeat_s=args.fleet_heartbeat, lost_after_s=3 * args.fleet_heartbeat)
    (work / "sim").mkdir()
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            for name in ("s1", "s2", "s3"):
                url = sim.start_plane(name)
                await until(lambda url=url: health(client, url), within=60, what=f"plane {name} up")
            urls = [sim.url(n) for n in ("s1", "s2", "s3")]
            token = (await client.post(urls[0] + "/api/cluster/tokens", headers=AUTH,
                                       json={"name": "sim"})).json()["token"]
            ready = trio.Semaphore(0, max_value=args.nodes + 1)
            async with trio.open_nursery() as nursery:
                joining = time.perf_counter()
                waves = trio.Semaphore(50)

                async def one(i: int) -> None:
                    async with waves:
                        nursery.start_soon(sim_node, urls, token, i, ready)
                        await ready.acquire()

                async with trio.open_nursery() as joins:
                    for i in range(args.nodes):
                        joins.start_soon(one, i)
                attached = args.nodes - len(FAILED)
                print(f"{attached} of {args.nodes} simulated nodes attached to 3 planes ({3 * attached} WebSockets) "
                      f"in {time.perf_counter() - joining:.1f} s; heartbeats every {args.fleet_heartbeat:g} s"
                      + (f"; {len(FAILED)} could not attach ({', '.join(sorted(set(FAILED)))})" if FAILED else ""))
                await trio.sleep(2)  # past the joins' own writes
                pids = {name: proc.pid for name, (proc, _, _) in sim.planes.items()}
                cpu0 = {n: cpu_seconds(p) for n, p in pids.items()}
                pg0, t0 = await trio.to_thread.run_sync(pg_counters, state), time.perf_counter()
                await trio.sleep(args.window)
                cpu1 = {n: cpu_seconds(p) for n, p in pids.items()}
                pg1, t1 = await trio.to_thread.run_sync(pg_counters, state), time.perf_counter()
                span = t1 - t0
                cpus = ", ".join(f"{n} {100 * (cpu1[n] - cpu0[n]) / span:.1f}%" for n in pids)
                print(f"  plane CPU over {span:.0f} s (% of one core): {cpus}")
                print(f"  PostgreSQL: {(pg1[0] - pg0[0]) / span:.1f} commits/s, {(pg1[1] - pg0[1]) / span:.1f} "
                      f"rows written/s (inserted+updated+deleted; heartbeats are not written)")
                nursery.cancel_scope.cancel()
    finally:
        sim.stop()


if __name__ == "__main__":
    with machine_report():
        parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--state", default=None, help="a postgresql:// URL to use (default: start one)")
        parser.add_argument("--concurrency", type=int, default=16, help="gateway clients (default 16)")
        parser.add_argument("--seconds", type=float, default=15.0, help="each gateway measurement (default 15)")
        parser.add_argument("--ttl", type=float, default=3.0, help="the leader lease, seconds (default 3)")
        parser.add_argument("--limits-seconds", type=float, default=60.0,
                            help="limiter accuracy window (default 60; 0 skips)")
        parser.add_argument("--nodes", type=int, default=1000, help="simulated nodes (default 1000; 0 skips)")
        parser.add_argument("--fleet-only", action="store_true", help="only the simulated fleet part")
        parser.add_argument("--fleet-heartbeat", type=float, default=5.0,
                            help="the simulated fleet's heartbeat interval, seconds (default 5, the plane's default)")
        parser.add_argument("--window", type=float, default=20.0, help="the fleet's measured window (default 20)")
        trio.run(partial(main, parser.parse_args()))
