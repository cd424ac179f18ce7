"""Console benchmark: the overview and jobs pages of a big fleet, rendered server-side.

    .venv/bin/python bench/console.py             # 1,000 nodes, 100 deployments, 10,000 runs; 200 requests a page
    .venv/bin/python bench/console.py --quick     # smoke: the same data, 30 requests a page
    .venv/bin/python bench/console.py --json      # the figures as one JSON document on stdout

The console (runtime/console) is served by this process over real HTTP on 127.0.0.1, behind
the plane's access guard, with a signed-in admin's session cookie. Its state is the plane's
own objects on real SQLite files: 1,000 node registry records (hello + heartbeat, as a node's
connection makes them; no node process), 100 deployments in the cluster store, 10,000 job
runs of 100 jobs in the jobs store, a users.db with the admin. Each page is requested
sequentially; the time is from sending the request to the last byte (server-side render
plus one loopback hop), p50/p99, and the transfer size. Targets: p50 < 150 ms, p99 < 400 ms,
< 300 KB a page. Peer, in the same run: the JSON API the CLI reads for the same data
(GET /api/cluster/status, GET /api/v1/runs?limit=100), through the same guard. The console
reads the scheduler's status through a snapshot at most 1 s old shared by every page and live
feed (runtime/console/context.py), so about one request in ten here pays for building it
(~50 ms for 1,000 nodes): that is in the p99.
The machine and its load are printed before and after.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._machine import machine_report  # noqa: E402
from packer.manifest import Resources  # noqa: E402
from runtime.api import hash_key  # noqa: E402
from runtime.api.access import Access  # noqa: E402
from runtime.console import ConsoleParts, register  # noqa: E402
from runtime.control.messages import Gpu, Heartbeat, Hello  # noqa: E402
from runtime.http import serve_app  # noqa: E402
from runtime.jobs import routes as job_routes  # noqa: E402
from runtime.jobs.engine import JobEngine  # noqa: E402
from runtime.jobs.lease import SoloLease  # noqa: E402
from runtime.jobs.records import NewRun  # noqa: E402
from runtime.jobs.schema import parse_job  # noqa: E402
from runtime.jobs.store import RunStore  # noqa: E402
from runtime.scheduler import routes as cluster_routes  # noqa: E402
from runtime.scheduler.reconcile import Deployment  # noqa: E402
from runtime.scheduler.service import Scheduler  # noqa: E402
from runtime.scheduler.store import ClusterStore  # noqa: E402

ADMIN = "bench-console-admin"
NODES, DEPLOYMENTS, JOBS, RUNS_PER_JOB = 1000, 100, 100, 100
STATES = ("succeeded", "succeeded", "succeeded", "failed", "cancelled")
TARGET_P50_MS, TARGET_P99_MS, TARGET_BYTES = 150.0, 400.0, 300 * 1024


def fill(data_dir: Path) -> tuple[RunStore, Access, str]:
    """The stores with the fleet's deployments and runs; (run store, access, a session id)."""
    store = ClusterStore(data_dir / "cluster.db")
    for i in range(DEPLOYMENTS):
        store.save_deployment(Deployment(f"svc-{i:03d}", "1.0.0", 1 + i % 3, Resources(ram_mb=256),
                                         (f"model-{i:03d}",)))
    store.close()
    runs = RunStore(data_dir / "jobs.db")
    now = time.time()
    for j in range(JOBS):
        spec = parse_job({"name": f"job-{j:03d}", "description": "a bench job", "trigger": {"type": "manual"},
                          "steps": [{"name": "a", "service": "echo@1.0.0", "command": ["true"]},
                                    {"name": "b", "service": "echo@1.0.0", "command": ["true"], "needs": ["a"]}]},
                         tenant=f"t{j % 10}")
        job, _ = runs.put_job(spec, now=now)
        runs.materialise(job, [NewRun(now - k * 60, "manual", state=STATES[k % len(STATES)])
                               for k in range(RUNS_PER_JOB)], now=now)
    access = Access.open(data_dir)
    access.users.create_user("bench", "admin", "bench password 123")
    session_id, _ = access.users.open_session("bench")
    return runs, access, session_id


def fleet(data_dir: Path) -> Scheduler:
    """A scheduler on the stored deployments with NODES registry records (hello + one heartbeat)."""

    async def no_manifest(service_id: str, version: str) -> Any:
        raise LookupError("the bench resolves no manifest")

    scheduler = Scheduler.open(data_dir, no_manifest, hub_url="http://127.0.0.1:9", lost_after=3600.0)
    for i in range(NODES):
        gpus = (Gpu("NVIDIA L4", 23034, 0),) if i % 4 == 0 else ()
        hello = Hello(node_id=f"{i:016x}", name=f"node-{i:04d}", agent_version="bench", cpu_count=16,
                      ram_mb=65536, gpus=gpus, labels={"zone": f"z{i % 3}"})
        epoch = scheduler.registry.connect(hello)
        scheduler.registry.heartbeat(hello.node_id, epoch, Heartbeat(seq=1, free_ram_mb=32768))
    return scheduler


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def measure(client: httpx.AsyncClient, path: str, n: int) -> dict[str, Any]:
    """p50/p99 ms and bytes of `n` sequential GETs of `path`."""
    times, size = [], 0
    for _ in range(n):
        start = time.perf_counter()
        r = await client.get(path)
        times.append((time.perf_counter() - start) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"GET {path} answered {r.status_code}: {r.text[:200]}")
        size = len(r.content)
    return {"path": path, "p50_ms": round(statistics.median(times), 1), "p99_ms": round(percentile(times, 99), 1),
            "bytes": size}


async def run(requests: int) -> dict[str, Any]:
    from quart_trio import QuartTrio

    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        data_dir = Path(tmp)
        runs, access, session_id = await trio.to_thread.run_sync(fill, data_dir)
        scheduler = fleet(data_dir)
        app = QuartTrio("bench-console")
        key_hash = hash_key(ADMIN)
        cluster_routes.register(app, scheduler, admin_key_hash=key_hash, version="bench", roles=("scheduler",))
        engine = JobEngine(runs, None, SoloLease())  # type: ignore[arg-type]  # nothing runs: pages only
        job_routes.register(app, engine, runs, admin_key_hash=key_hash, tenant_of=None)
        jobs = type("Jobs", (), {"store": runs, "engine": engine})()
        register(app, ConsoleParts(access, scheduler=scheduler, jobs=jobs))
        app.asgi_app = access.guard(app.asgi_app, key_hash)  # type: ignore[method-assign]
        try:
            async with trio.open_nursery() as nursery:
                urls = await nursery.start(partial(serve_app, app, host="127.0.0.1", port=0))
                url = str(urls[0])
                cookies = {"flowctl_session": session_id}
                async with httpx.AsyncClient(base_url=url, cookies=cookies, timeout=30) as page_client, \
                        httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"},
                                          timeout=30) as api_client:
                    for client, path in ((page_client, "/ui"), (page_client, "/ui/jobs")):
                        await measure(client, path, 3)  # warm: templates compiled, caches filled
                    figures = {
                        "overview": await measure(page_client, "/ui", requests),
                        "jobs": await measure(page_client, "/ui/jobs", requests),
                        "peer_status_json": await measure(api_client, "/api/cluster/status", requests),
                        "peer_runs_json": await measure(api_client, "/api/v1/runs?limit=100", requests),
                    }
                nursery.cancel_scope.cancel()
        finally:
            runs.close()
            scheduler.store.close()
            access.close()
    figures["data"] = {"nodes": NODES, "deployments": DEPLOYMENTS, "runs": JOBS * RUNS_PER_JOB,
                       "requests_per_page": requests}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 requests a page instead of 200")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    with machine_report():
        figures = trio.run(run, 30 if args.quick else 200)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    data = figures["data"]
    print(f"console pages: {data['nodes']} nodes, {data['deployments']} deployments, {data['runs']} runs, "
          f"{data['requests_per_page']} sequential requests a page")
    for name, peer in (("overview", "peer_status_json"), ("jobs", "peer_runs_json")):
        f, p = figures[name], figures[peer]
        ok = f["p50_ms"] < TARGET_P50_MS and f["p99_ms"] < TARGET_P99_MS and f["bytes"] < TARGET_BYTES
        print(f"  {name:9s} {f['path']:10s} p50 {f['p50_ms']:7.1f} ms  p99 {f['p99_ms']:7.1f} ms  "
              f"{f['bytes'] / 1024:7.1f} KB   {'meets' if ok else 'MISSES'} p50<150 p99<400 <300KB")
        print(f"  {'peer':9s} {p['path']:10s} p50 {p['p50_ms']:7.1f} ms  p99 {p['p99_ms']:7.1f} ms  "
              f"{p['bytes'] / 1024:7.1f} KB   page/JSON p50 ratio {f['p50_ms'] / max(p['p50_ms'], 0.01):.2f}")


if __name__ == "__main__":
    main()
