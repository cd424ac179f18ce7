"""Real processes for the scale-out tests: several `flowctl serve` planes on one state, and nodes.

Every plane is its own `flowctl serve` process (so SIGKILL, SIGSTOP and SIGCONT mean what they
mean in production), sharing the state the `state` argument names: a data dir on this host (the
SQLite path) or, once given, a PostgreSQL URL. Nodes are `flowctl node join` processes attached to
the planes a test names. Everything is stopped (SIGCONT first, then SIGTERM, SIGKILL) when the
cluster's context ends.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from packer import pack_dir
from tests.polling import wait_until

ADMIN = "scale-admin-key"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
ECHO = Path(__file__).resolve().parents[2] / "examples" / "echo"
TTL = 2.0  # the leader lease in these tests: short, so a takeover is quick
HEARTBEAT = 0.2
LOST_AFTER = 4.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    """One flowctl process with its output in a file."""

    name: str
    argv: list[str]
    log: Path
    process: trio.Process | None = None
    url: str = ""

    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@dataclass
class Cluster:
    """The planes and nodes of one test, and how to reach them."""

    root: Path
    nursery: trio.Nursery
    env: dict[str, str]
    state: str | None = None  # a PostgreSQL URL, or None: SQLite files in the shared data dir
    planes: dict[str, Proc] = field(default_factory=dict)
    nodes: dict[str, Proc] = field(default_factory=dict)

    async def start(self, proc: Proc) -> Proc:
        out = _log_file(proc.log)
        proc.process = await self.nursery.start(partial(
            trio.run_process, proc.argv, check=False, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=self.env))
        out.close()
        return proc

    async def plane(self, name: str, *, extra: tuple[str, ...] = ()) -> Proc:
        """Start plane `name` on the shared state; returns once it answers /health."""
        port = free_port()
        argv = [sys.executable, "-m", "flowctl", "serve", "--roles", "hub,scheduler,gateway,jobs",
                "--port", str(port), "--data-dir", str(self.root / "state"), "--plane-name", name,
                "--leader-ttl", str(TTL), "--heartbeat-interval", str(HEARTBEAT), "--lost-after", str(LOST_AFTER),
                "--anonymous-tenant", "default", *(("--state", self.state) if self.state else ()), *extra]
        proc = await self.start(Proc(name, argv, self.root / f"plane-{name}.log", url=f"http://127.0.0.1:{port}"))
        self.planes[name] = proc
        with trio.fail_after(60):
            while await health(proc) is None:
                assert proc.alive(), proc.output()
                await trio.sleep(0.1)
        return proc

    async def node(self, name: str, planes: list[str], token: str) -> Proc:
        """Start node `name` attached to `planes` (by name)."""
        urls = ",".join(self.planes[p].url for p in planes)
        argv = [sys.executable, "-m", "flowctl", "node", "join", urls, "--token", token, "--name", name,
                "--data-dir", str(self.root / f"node-{name}")]
        proc = await self.start(Proc(name, argv, self.root / f"node-{name}.log"))
        self.nodes[name] = proc
        return proc

    async def leader(self) -> str:
        """The name of the plane that leads now (waits until one does)."""
        found: list[str] = []

        async def check() -> bool:
            found.clear()
            for name, proc in self.planes.items():
                h = await health(proc) if proc.alive() else None
                if h is not None and h["roles"]["scheduler"].get("leader"):
                    found.append(name)
            return len(found) == 1

        while not await check():  # noqa: ASYNC110 - the state lives in other processes
            await trio.sleep(0.05)
        return found[0]

    async def stop(self) -> None:
        for proc in [*self.nodes.values(), *self.planes.values()]:
            if proc.alive():
                assert proc.process is not None
                proc.process.send_signal(signal.SIGCONT)
                proc.process.send_signal(signal.SIGTERM)
        with trio.move_on_after(20):
            for proc in [*self.nodes.values(), *self.planes.values()]:
                if proc.process is not None:
                    await proc.process.wait()
        for proc in [*self.nodes.values(), *self.planes.values()]:
            if proc.alive():
                assert proc.process is not None
                proc.process.kill()


def _log_file(path: Path):
    return open(path, "wb")  # handed to the child process, closed once it has it


@asynccontextmanager
async def cluster(root: Path, state: str | None = None):
    """A Cluster (planes on `state`, see Cluster) whose processes all end with the context."""
    env = {**os.environ, "FLOWCTL_ADMIN_KEY": ADMIN, "FLOWCTL_TOKEN": ADMIN,
           "FLOWCTL_CONFIG": "/nonexistent/flowctl.toml"}
    async with trio.open_nursery() as nursery:
        c = Cluster(root, nursery, env, state)
        try:
            yield c
        finally:
            with trio.CancelScope(shield=True):
                await c.stop()
            nursery.cancel_scope.cancel()


async def health(proc: Proc) -> dict[str, Any] | None:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            r = await client.get(proc.url + "/health")
            return r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


async def api(proc: Proc, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=proc.url, timeout=30) as client:
        return await client.request(method, path, headers=AUTH, **kwargs)


async def publish_echo(proc: Proc, tmp_path: Path) -> None:
    bundle = pack_dir(ECHO, tmp_path / "dist")
    r = await api(proc, "PUT", "/api/services/echo/1.0.0", content=bundle.path.read_bytes())
    assert r.status_code in (200, 201), r.text


async def join_token(proc: Proc) -> str:
    r = await api(proc, "POST", "/api/cluster/tokens", json={"name": "nodes"})
    assert r.status_code in (200, 201), r.text
    return r.json()["token"]


async def deployment(proc: Proc) -> dict[str, Any] | None:
    try:
        r = await api(proc, "GET", "/api/cluster/status")
    except httpx.HTTPError:
        return None
    deps = r.json()["deployments"] if r.status_code == 200 else []
    return deps[0] if deps else None


async def until_ready(proc: Proc, replicas: int) -> dict[str, Any]:
    """The deployment once `proc` sees `replicas` ready replicas of it."""
    while True:
        dep = await deployment(proc)
        if dep is not None and dep["ready"] == replicas == len(dep["replicas"]):
            return dep
        await trio.sleep(0.1)


async def chat(proc: Proc, text: str = "hi") -> tuple[int, str]:
    async with httpx.AsyncClient(base_url=proc.url, timeout=15) as client:
        r = await client.post("/v1/chat/completions", json={"model": "echo", "messages": [
            {"role": "user", "content": text}]})
        return r.status_code, r.text


def worker_pids(node_dir: Path) -> list[int]:
    """Pids of the echo workers running out of `node_dir` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(f"/proc/{entry}/cwd")
            state = Path(f"/proc/{entry}/stat").read_text().split()[2]
        except OSError:
            continue
        if state != "Z" and any(part.endswith(b"worker.py") for part in cmd) and cwd.startswith(str(node_dir)):
            found.append(int(entry))
    return sorted(found)


def placements(dep: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(replica id, node id, attempt) of each replica: what 'no reschedule' compares."""
    return sorted((r["replica_id"], r["node_id"], r["attempt"]) for r in dep["replicas"])


__all__ = ["ADMIN", "LOST_AFTER", "TTL", "Cluster", "api", "chat", "cluster", "deployment", "health",
           "join_token", "placements", "publish_echo", "until_ready", "wait_until", "worker_pids"]
