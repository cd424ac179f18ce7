"""Batch API throughput vs the same requests sent straight through the gateway, at one concurrency.

    python bench/_jobs_batch.py [--n 1000] [--concurrency 32]

Starts the real echo worker and, in a second process, a plane (hub, scheduler, gateway, jobs;
batches run `concurrency` lines at once) with a node agent in front of that worker. Then, from
this process: `n` chat requests sent by a client through the gateway, `concurrency` at a time
(the peer), and the same `n` requests as one batch (upload, create, poll until completed).
Both go through the same tunnel to the same worker; the figure is the ratio of their
throughputs (target >= 0.9). `run_batch_bench` is what bench/jobs.py calls.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import selectors
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._cluster import _stand_in, stop  # noqa: E402

START_TIMEOUT_S = 90.0
WARMUP = 50


def _chat(i: int) -> dict[str, Any]:
    return {"model": "echo", "messages": [{"role": "user", "content": f"hello number {i}"}]}


async def _serve(data: Path, worker_url: str, concurrency: int) -> None:
    """The plane and a node agent reporting one echo replica at `worker_url`; prints {"url", "key"}."""
    import httpx
    import trio

    from packer import pack_dir
    from runtime.control.messages import ReplicaReport
    from runtime.node.agent import AgentConfig, run_agent
    from runtime.plane import PlaneSettings, serve_control_plane

    src, manifest = _stand_in(ROOT / "examples" / "echo", data / "src")
    models = tuple(m["model_id"] for m in manifest["models"])

    class Executor:  # the replica is ready at once: the worker already runs
        def __init__(self) -> None:
            self.running: dict[str, ReplicaReport] = {}

        def inventory(self):
            return (), tuple(self.running.values())

        def apply(self, assign, hub_url, report):
            self.running = {}
            for a in assign.replicas:
                self.running[a.replica_id] = ReplicaReport(a.replica_id, a.service_id, a.version, a.attempt,
                                                           "ready", models=models, max_concurrency=concurrency * 2)
                report(self.running[a.replica_id])

        def worker_url(self, replica_id):
            return worker_url if replica_id in self.running else None

    admin = secrets.token_urlsafe(24)
    settings = PlaneSettings(data_dir=data / "plane", port=0, roles=("hub", "scheduler", "gateway", "jobs"),
                             extra={"batches": {"concurrency": concurrency}})
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(partial(serve_control_plane, settings, admin_key=admin))
        bundle = await trio.to_thread.run_sync(pack_dir, src, data / "dist")
        async with httpx.AsyncClient(base_url=handle.url, headers={"Authorization": f"Bearer {admin}"},
                                     timeout=60) as c:
            (await c.put(f"/api/services/echo/{manifest['version']}", content=bundle.path.read_bytes())
             ).raise_for_status()
            token = (await c.post("/api/cluster/tokens", json={"name": "bench"})).json()["token"]
            await nursery.start(run_agent, AgentConfig(url=handle.url, token=token, node_id="n", name="n"),
                                Executor())
            (await c.post("/api/deployments", json={"service": "echo", "replicas": 1})).raise_for_status()
            with trio.fail_after(START_TIMEOUT_S):
                while not handle.scheduler.routes("echo"):  # noqa: ASYNC110 - set by another task
                    await trio.sleep(0.02)
            await c.post("/api/gateway/tenants", json={"name": "bench"})
            key = (await c.post("/api/gateway/keys", json={"tenant": "bench"})).json()["key"]
        print(json.dumps({"url": handle.url, "key": key}), flush=True)
        await trio.sleep_forever()


def _spawn_line(argv: list[str], env: dict[str, str], log: Path, *, line: bool) -> tuple[subprocess.Popen, bytes]:
    """Start a child; with `line`, wait (bounded) for its first stdout line."""
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                                stdout=subprocess.PIPE if line else out, stderr=out)
    first = b""
    if line:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if sel.select(timeout=START_TIMEOUT_S):
                first = proc.stdout.readline()
        if not first:
            stop(proc)
            raise RuntimeError(f"{argv[1]} exited before it was ready; see {log}")
    return proc, first


def _start_worker(tmp: Path, concurrency: int) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import httpx

    proc, _ = _spawn_line([sys.executable, str(ROOT / "examples" / "echo" / "worker.py")],
                          {"FLOWCTL_PORT": str(port), "ECHO_MAX_CONCURRENCY": str(concurrency * 2)},
                          tmp / "worker.log", line=False)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"the echo worker did not come up; see {tmp / 'worker.log'}")


async def _direct(url: str, key: str, n: int, concurrency: int, first: int = 0) -> tuple[float, int]:
    """n chat requests through the gateway, `concurrency` at a time: (seconds, failures)."""
    import httpx
    import trio

    failures = 0
    todo = iter(range(first, first + n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60,
                                 limits=limits) as client:
        async def worker() -> None:
            nonlocal failures
            for i in todo:
                r = await client.post("/v1/chat/completions", json=_chat(i))
                failures += r.status_code != 200

        began = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
        return time.perf_counter() - began, failures


async def _batch(url: str, key: str, n: int) -> tuple[float, dict[str, Any]]:
    """The same n requests as one batch: (seconds from upload to completed, the batch)."""
    import httpx
    import trio

    lines = b"".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                                 "body": _chat(i)}).encode() + b"\n" for i in range(n))
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        began = time.perf_counter()
        r = await client.post("/v1/files", files={"file": ("bench.jsonl", lines)}, data={"purpose": "batch"})
        r.raise_for_status()
        r = await client.post("/v1/batches", json={"input_file_id": r.json()["id"],
                                                   "endpoint": "/v1/chat/completions", "completion_window": "24h"})
        r.raise_for_status()
        batch = r.json()
        with trio.fail_after(600):
            while batch["status"] not in ("completed", "failed", "cancelled", "expired"):
                await trio.sleep(0.02)
                batch = (await client.get(f"/v1/batches/{batch['id']}")).json()
        return time.perf_counter() - began, batch


def run_batch_bench(n: int = 1000, concurrency: int = 32) -> dict[str, Any]:
    """Batch API vs direct gateway calls, n chat requests each at `concurrency`: the figures."""
    import trio

    with tempfile.TemporaryDirectory(prefix="flowctl-bench-batch-") as name:
        tmp = Path(name)
        worker, worker_url = _start_worker(tmp, concurrency)
        plane = None
        try:
            argv = [sys.executable, str(Path(__file__).resolve()), "--serve", str(tmp), worker_url,
                    "--concurrency", str(concurrency)]
            plane, line = _spawn_line(argv, {}, tmp / "plane.log", line=True)
            info = json.loads(line)

            async def measure() -> dict[str, Any]:
                await _direct(info["url"], info["key"], WARMUP, concurrency, first=10 * n)
                direct_s, direct_failed = await _direct(info["url"], info["key"], n, concurrency)
                batch_s, batch = await _batch(info["url"], info["key"], n)
                counts = batch["request_counts"]
                return {"n": n, "concurrency": concurrency,
                        "direct_rps": n / direct_s, "batch_rps": n / batch_s,
                        "ratio": direct_s / batch_s, "direct_s": direct_s, "batch_s": batch_s,
                        "direct_failed": direct_failed, "batch_status": batch["status"],
                        "batch_completed": counts["completed"], "batch_failed": counts["failed"]}

            return trio.run(measure)
        finally:
            if plane is not None:
                stop(plane)
            stop(worker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="chat requests each way (default 1,000)")
    parser.add_argument("--concurrency", type=int, default=32, help="batch lines / client requests at once")
    parser.add_argument("--serve", nargs=2, metavar=("DATA", "WORKER_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        import trio

        trio.run(_serve, Path(args.serve[0]), args.serve[1], args.concurrency)
        return
    figures = run_batch_bench(args.n, args.concurrency)
    print(f"batch vs gateway, {figures['n']} chat requests to echo at concurrency {figures['concurrency']}:")
    print(f"  gateway (client)  {figures['direct_rps']:8.1f} req/s  ({figures['direct_s']:.2f} s, "
          f"{figures['direct_failed']} failed)")
    print(f"  Batch API         {figures['batch_rps']:8.1f} req/s  ({figures['batch_s']:.2f} s, "
          f"{figures['batch_status']}, {figures['batch_completed']} completed, {figures['batch_failed']} failed)")
    print(f"  ratio batch/gateway {figures['ratio']:.2f}x (target >= 0.9x: "
          f"{'OK' if figures['ratio'] >= 0.9 else 'MISSED'})")


if __name__ == "__main__":
    main()
