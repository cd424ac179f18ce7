"""Soak: clients hanging up on streamed replies, by the thousand, against real processes.

    python bench/disconnects.py [--cuts 2000] [--concurrency 32] [--limit-s 600] [--json]

Starts `flowctl up` (a control plane with its local node) and a standalone
`flowctl node join` node, deploys the echo worker on both, then opens --cuts streaming
chat completions in bursts of --concurrency, each hung up at a random moment, while a
bystander tenant streams long replies the whole time. It prints how many streams were cut
(and per second), how many bystander replies arrived whole or broken, and whether either
node's control connection ever dropped (its connection epoch in `/api/cluster/status`,
"connection lost" in its log). Exit 0 when nothing but the cut streams was disturbed.

Bounded: it stops after --limit-s seconds whatever the count. Every child runs in a session
of its own and its group is killed at the end, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._machine import machine_report

ROOT = Path(__file__).resolve().parents[1]
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "a b c d"}], "stream": True}
BYSTANDER_TOKENS = 400
EXPECTED = "".join(["a", " b", " c", " d"][i % 4] for i in range(BYSTANDER_TOKENS))


def machine() -> str:
    """CPU model and load average, printed with the figures."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    return f"{model}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Children:
    """Child processes, each in its own session, killed by group at the end."""

    def __init__(self, tmp: Path, env: dict[str, str]):
        self.tmp, self.env, self.procs = tmp, env, {}

    def spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")  # closed in stop()
        proc = subprocess.Popen([sys.executable, "-m", "flowctl", *args], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, env=self.env, start_new_session=True)
        self.procs[name] = (proc, log)
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc, _ in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc, log in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the workers too, whatever happened
            except ProcessLookupError:
                pass
            proc.wait()
            log.close()


async def cli(env: dict[str, str], *args: str) -> str:
    """Run one flowctl command; its stdout, or raise with its stderr."""
    result = await trio.run_process([sys.executable, "-m", "flowctl", *args], capture_stdout=True,
                                    capture_stderr=True, check=False, env=env, stdin=subprocess.DEVNULL)
    if result.returncode:
        raise RuntimeError(f"flowctl {' '.join(args)}: {result.stderr.decode().strip()}")
    return result.stdout.decode()


async def poll_status(client: httpx.AsyncClient, check, *, limit_s: float = 90.0) -> dict:
    """The cluster status once `check(status)` holds."""
    with trio.fail_after(limit_s):
        while True:
            try:
                r = await client.get("/api/cluster/status")
                if r.status_code == 200 and check(r.json()):
                    return r.json()
            except httpx.TransportError:
                pass
            await trio.sleep(0.2)


async def hang_up(url: str, key: str, after: float) -> None:
    """One long stream on its own connection, closed `after` seconds in."""
    body = {**CHAT, "echo_tokens": 100_000, "echo_delay_s": 0.001}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        with trio.move_on_after(after):
            async with client.stream("POST", "/v1/chat/completions", json=body,
                                     headers={"Authorization": f"Bearer {key}"}) as r:
                async for _ in r.aiter_raw():
                    pass


async def bystander(url: str, key: str, results: dict, stop: trio.Event) -> None:
    """Long replies streamed whole, one after another, until `stop`; each checked."""
    body = {**CHAT, "echo_tokens": BYSTANDER_TOKENS, "echo_delay_s": 0.002}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while not stop.is_set():
            text, done, why = [], False, ""
            try:
                async with client.stream("POST", "/v1/chat/completions", json=body,
                                         headers={"Authorization": f"Bearer {key}"}) as r:
                    async for line in r.aiter_lines():
                        if line == "data: [DONE]":
                            done = True
                        elif line.startswith("data: "):
                            chunk = json.loads(line[6:])
                            if "error" in chunk:
                                why = f"error event: {chunk['error'].get('message')}"
                            choices = chunk.get("choices")
                            text.append(choices[0]["delta"].get("content") or "" if choices else "")
                if r.status_code != 200:
                    why = f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"
                elif not why and (not done or "".join(text) != EXPECTED):
                    why = f"done={done}, {len(''.join(text))} of {len(EXPECTED)} characters"
            except httpx.HTTPError as exc:
                why = f"{type(exc).__name__}: {exc}"
            if why:
                results["broken"] += 1
                results["why"].append(why)
            else:
                results["whole"] += 1


async def soak(args: argparse.Namespace, tmp: Path, children: Children) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    admin = secrets.token_urlsafe(24)
    env = {**os.environ, "FLOWCTL_ADMIN_KEY": admin, "FLOWCTL_TOKEN": admin, "FLOWCTL_SERVER": url,
           "FLOWCTL_CONFIG": "/nonexistent/flowctl.toml", "PYTHONUNBUFFERED": "1"}
    children.env = env
    children.spawn("plane", "up", "--port", str(port), "--data-dir", str(tmp / "plane"), "--name", "local")
    async with httpx.AsyncClient(base_url=url, timeout=30,
                                 headers={"Authorization": f"Bearer {admin}"}) as admin_client:
        await poll_status(admin_client, lambda s: [n["state"] for n in s["nodes"]] == ["ready"])
        token = (await cli(env, "node", "token", "create", "edge")).strip()
        children.spawn("edge", "node", "join", url, "--token", token, "--data-dir", str(tmp / "edge"),
                       "--name", "edge")
        await poll_status(admin_client, lambda s: sorted(n["state"] for n in s["nodes"]) == ["ready", "ready"])
        await cli(env, "pack", str(ROOT / "examples" / "echo"), "--out", str(tmp / "dist"))
        bundle = next((tmp / "dist").glob("echo-*.fbundle"))
        await cli(env, "publish", str(bundle), "--hub", url)
        await cli(env, "deploy", "echo", "--replicas", "2")
        status = await poll_status(admin_client, lambda s: s["deployments"] and s["deployments"][0]["ready"] == 2)
        epochs = {n["name"]: n["connection"] for n in status["nodes"]}
        keys = {}
        for tenant in ("cutter", "bystander"):
            await cli(env, "tenants", "create", tenant)
            keys[tenant] = (await cli(env, "keys", "create", "--tenant", tenant)).strip()  # only the key is on stdout

        rng = random.Random(2000)
        results: dict = {"whole": 0, "broken": 0, "why": []}
        cut, began = 0, time.monotonic()
        stop = trio.Event()
        with trio.move_on_after(args.limit_s):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(bystander, url, keys["bystander"], results, stop)
                while cut < args.cuts:
                    burst = min(args.concurrency, args.cuts - cut)
                    async with trio.open_nursery() as burst_nursery:
                        for _ in range(burst):
                            burst_nursery.start_soon(hang_up, url, keys["cutter"], rng.uniform(0.0, 0.6))
                    cut += burst
                stop.set()
        elapsed = time.monotonic() - began
        status = (await admin_client.get("/api/cluster/status")).json()
    nodes = {n["name"]: n for n in status["nodes"]}
    return {
        "cut_streams": cut, "seconds": round(elapsed, 1), "cuts_per_s": round(cut / elapsed, 1),
        "bystander_whole": results["whole"], "bystander_broken": results["broken"],
        "bystander_failures": results["why"][:5],
        "node_connections_replaced": sum(nodes[name]["connection"] != epoch for name, epoch in epochs.items()),
        "nodes_ready": sum(n["state"] == "ready" for n in nodes.values()),
        "connection_lost_lines": sum(children.log(name).count("connection lost") for name in ("plane", "edge")),
        "processes_alive": sum(proc.poll() is None for proc, _ in children.procs.values()),
        "machine": machine(),
    }


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the soak like Ctrl-C: the children are killed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cuts", type=int, default=2000, help="streams to hang up on (default 2000)")
    parser.add_argument("--concurrency", type=int, default=32, help="streams cut per burst (default 32)")
    parser.add_argument("--limit-s", type=float, default=600, help="stop after this long (default 600)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory(prefix="flowctl-soak-") as tmp:
        children = Children(Path(tmp), dict(os.environ))
        try:
            figures = trio.run(soak, args, Path(tmp), children)
        finally:
            children.stop()
    healthy = (figures["bystander_broken"] == 0 and figures["node_connections_replaced"] == 0
               and figures["nodes_ready"] == 2 and figures["connection_lost_lines"] == 0
               and figures["processes_alive"] == 2 and figures["bystander_whole"] > 0)
    if args.json:
        print(json.dumps({**figures, "healthy": healthy}))
    else:
        print(f"machine: {figures['machine']}")
        print(f"cut {figures['cut_streams']} streams in {figures['seconds']} s ({figures['cuts_per_s']}/s)")
        print(f"bystander replies: {figures['bystander_whole']} whole, {figures['bystander_broken']} broken")
        for why in figures["bystander_failures"]:
            print(f"  broken: {why}")
        print(f"node connections replaced: {figures['node_connections_replaced']}, "
              f"'connection lost' log lines: {figures['connection_lost_lines']}, "
              f"processes alive: {figures['processes_alive']}/2")
        print("healthy" if healthy else "NOT healthy")
    sys.exit(0 if healthy else 1)


if __name__ == "__main__":
    with machine_report():
        main()
