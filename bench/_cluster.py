"""A control plane and a node agent in front of a worker that already runs (for the benchmarks).

    python bench/_cluster.py DATA_DIR SERVICE_DIR WORKER_URL [--max-concurrency N] [--max-sessions N]

One process runs the plane (hub + scheduler + gateway, like `flowctl up`) and a node agent
connected to it over the real node tunnel. The agent's executor starts nothing: it reports
one replica ready at WORKER_URL, serving the models SERVICE_DIR/service.json names, so the
gateway reaches the worker the benchmark already started (through the tunnel, as in
production). The hub gets a stand-in bundle with that manifest and empty model files, so no
model is packed. Once a gateway key exists it prints one JSON line
{"gateway", "key", "models", "pid"} and serves until SIGTERM.

The parent side: `start_cluster` (spawn, read that line) and `stop` (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import selectors
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60.0


def _stand_in(service_dir: Path, out: Path) -> tuple[Path, dict[str, Any]]:
    """A source tree with the service's manifest, an empty file per model path and a stub worker."""
    manifest = json.loads((service_dir / "service.json").read_text())
    out.mkdir(parents=True)
    (out / "service.json").write_text(json.dumps(manifest))
    (out / "worker.py").write_text("raise SystemExit('stand-in: the benchmark runs the real worker')\n")
    for model in manifest.get("models", []):
        if model.get("path") and not (out / model["path"]).exists():
            (out / model["path"]).parent.mkdir(parents=True, exist_ok=True)
            (out / model["path"]).write_bytes(b"")
    return out, manifest


async def serve(data: Path, service_dir: Path, worker_url: str, *, max_concurrency: int,
                sessions: dict[str, Any]) -> None:
    """Run the plane and the agent until cancelled; print the JSON line once ready."""
    import httpx
    import trio

    sys.path.insert(0, str(ROOT))
    from packer import pack_dir
    from runtime.control.messages import ReplicaReport
    from runtime.node.agent import AgentConfig, run_agent
    from runtime.plane import PlaneSettings, serve_control_plane

    src, manifest = _stand_in(service_dir, data / "src")
    service, version = manifest["service_id"], manifest["version"]
    models = tuple(m["model_id"] for m in manifest.get("models", ())) or (service,)

    class Executor:  # reports the replica ready at once, at the worker the caller runs
        def __init__(self) -> None:
            self.running: dict[str, ReplicaReport] = {}

        def inventory(self):
            return (), tuple(self.running.values())

        def apply(self, assign, hub_url, report):
            self.running = {}
            for a in assign.replicas:
                rep = ReplicaReport(a.replica_id, a.service_id, a.version, a.attempt, "ready", models=models,
                                    max_concurrency=max_concurrency)
                self.running[a.replica_id] = rep
                report(rep)

        def worker_url(self, replica_id):
            return worker_url if replica_id in self.running else None

    admin = secrets.token_urlsafe(24)
    async with trio.open_nursery() as nursery:
        settings = PlaneSettings(data_dir=data / "plane", port=0, roles=("hub", "scheduler", "gateway"),
                                 extra={"sessions": sessions})
        handle = await nursery.start(partial(serve_control_plane, settings, admin_key=admin))
        bundle = await trio.to_thread.run_sync(pack_dir, src, data / "dist")
        auth = {"Authorization": f"Bearer {admin}"}
        async with httpx.AsyncClient(base_url=handle.url, headers=auth, timeout=60) as c:
            r = await c.put(f"/api/services/{service}/{version}", content=bundle.path.read_bytes())
            r.raise_for_status()
            token = (await c.post("/api/cluster/tokens", json={"name": "bench"})).json()["token"]
            await nursery.start(run_agent, AgentConfig(url=handle.url, token=token, node_id="n", name="n"),
                                Executor())
            r = await c.post("/api/deployments", json={"service": service, "replicas": 1})
            r.raise_for_status()
            with trio.fail_after(START_TIMEOUT_S):
                while not handle.scheduler.routes(models[0]):  # noqa: ASYNC110 - set by another task
                    await trio.sleep(0.02)
            await c.post("/api/gateway/tenants", json={"name": "bench"})
            key = (await c.post("/api/gateway/keys", json={"tenant": "bench"})).json()["key"]
        print(json.dumps({"gateway": handle.url, "key": key, "models": list(models), "pid": os.getpid()}),
              flush=True)
        await trio.sleep_forever()


def start_cluster(data: Path, service_dir: Path, worker_url: str, *, max_concurrency: int = 64,
                  max_sessions: int | None = None) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Spawn the served process; returns it and its JSON line (stop it with `stop`)."""
    argv = [sys.executable, str(Path(__file__).resolve()), str(data), str(service_dir), worker_url,
            "--max-concurrency", str(max_concurrency)]
    if max_sessions is not None:
        argv += ["--max-sessions", str(max_sessions)]
    proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = b""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:  # bounded: a stuck start is reported, not waited on forever
        sel.register(proc.stdout, selectors.EVENT_READ)
        if sel.select(timeout=START_TIMEOUT_S + 30):
            line = proc.stdout.readline()
    if not line:
        stop(proc)
        raise RuntimeError(f"the plane + node process exited with {proc.returncode} before it was ready")
    return proc, json.loads(line)


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; always reaps."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def main() -> None:
    import trio

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("service_dir", type=Path)
    parser.add_argument("worker_url")
    parser.add_argument("--max-concurrency", type=int, default=64)
    parser.add_argument("--max-sessions", type=int)
    args = parser.parse_args()
    sessions = {"max_sessions": args.max_sessions} if args.max_sessions else {}
    trio.run(partial(serve, args.data, args.service_dir, args.worker_url,
                     max_concurrency=args.max_concurrency, sessions=sessions))


if __name__ == "__main__":
    main()
