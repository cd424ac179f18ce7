"""`flowctl up` as a user runs it: two terminals, a deploy, a killed node (real processes)."""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from packer import pack_dir

ADMIN = "up-admin-key"
ECHO = Path(__file__).resolve().parents[2] / "examples" / "echo"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(port):
    return {**os.environ, "FLOWCTL_ADMIN_KEY": ADMIN, "FLOWCTL_TOKEN": ADMIN,
            "FLOWCTL_SERVER": f"http://127.0.0.1:{port}", "FLOWCTL_CONFIG": "/nonexistent/flowctl.toml"}


async def cli(*args, port):
    result = await trio.run_process([sys.executable, "-m", "flowctl", *args], capture_stdout=True,
                                    capture_stderr=True, check=False, env=env_for(port),
                                    stdin=subprocess.DEVNULL)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def children(pid):
    """Child pids of every thread of `pid` (Trio forks from worker threads)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


async def status(port):
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://127.0.0.1:{port}/api/cluster/status",
                             headers={"Authorization": f"Bearer {ADMIN}"})
        return r.json()


async def until(predicate_coro, port, interval=0.1):
    while True:
        try:
            data = await status(port)
            if predicate_coro(data):
                return data
        except httpx.HTTPError:
            pass
        await trio.sleep(interval)


class Up:
    """A `flowctl up` process with its output in files."""

    def __init__(self, tmp_path, name):
        self.out = open(tmp_path / f"{name}.out", "w+b")
        self.err = open(tmp_path / f"{name}.err", "w+b")
        self.proc = None

    async def start(self, nursery, *args, port):
        self.proc = await nursery.start(partial(
            trio.run_process, [sys.executable, "-m", "flowctl", "up", "--port", str(port), *args],
            check=False, stdout=self.out, stderr=self.err, stdin=subprocess.DEVNULL, env=env_for(port)))

    def stderr(self):
        self.err.seek(0)
        return self.err.read().decode()


@pytest.fixture
async def cluster(tmp_path):
    port = free_port()
    ups = []
    async with trio.open_nursery() as nursery:

        async def start(name, *args):
            up = Up(tmp_path, name)
            await up.start(nursery, *args, port=port)
            ups.append(up)
            return up

        yield port, start
        for up in ups:
            if up.proc.returncode is None:
                up.proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(20):
            for up in ups:
                await up.proc.wait()
        nursery.cancel_scope.cancel()
    for up in ups:
        up.out.close()
        up.err.close()


async def test_two_terminals_deploy_and_a_killed_node(cluster, tmp_path):
    port, start = cluster
    bundle = pack_dir(ECHO, tmp_path / "dist")
    with trio.fail_after(120):
        first = await start("first", "--data-dir", str(tmp_path / "one"), "--name", "first")
        await until(lambda s: [n["state"] for n in s["nodes"]] == ["ready"], port)

        code, out, err = await cli("publish", str(bundle.path), "--hub", f"http://127.0.0.1:{port}", port=port)
        assert code == 0, err
        code, out, err = await cli("deploy", "echo", "--json", port=port)
        assert code == 0, err
        assert json.loads(out)["status"]["ready"] == 1

        # A second terminal: the port is held by a control plane, so up joins it as a node.
        code, _, err = await cli("up", "--port", str(port), "--data-dir", str(tmp_path / "two"), port=port)
        assert code == 1 and "held by a flowctl control plane" in err and "--token" in err
        code, token, err = await cli("node", "token", "create", "second", port=port)
        assert code == 0, err
        second = await start("second", "--token", token.strip(), "--data-dir", str(tmp_path / "two"),
                             "--name", "second")
        await until(lambda s: sorted(n["name"] for n in s["nodes"] if n["state"] == "ready") == ["first", "second"],
                    port)
        code, _, err = await cli("scale", "echo", "2", port=port)
        assert code == 0, err
        data = await until(lambda s: s["deployments"][0]["ready"] == 2, port)
        nodes = {n["node_id"]: n["name"] for n in data["nodes"]}
        assert sorted(nodes[r["node_id"]] for r in data["deployments"][0]["replicas"]) == ["first", "second"]

        # Kill the second node outright: its replica moves to the first node with a new attempt.
        second_workers = children(second.proc.pid)
        assert second_workers, "the second node should be running a worker"
        second.proc.send_signal(signal.SIGKILL)
        data = await until(lambda s: s["deployments"][0]["ready"] == 2 and all(
            nodes.get(r["node_id"]) == "first" for r in s["deployments"][0]["replicas"]), port)
        assert sorted(r["attempt"] for r in data["deployments"][0]["replicas"]) == [1, 2]
        assert {n["name"]: n["state"] for n in data["nodes"]}["second"] == "lost"

        # A SIGKILLed agent cannot stop its workers; the same node starting again does.
        try:
            await start("second-again", "--token", token.strip(), "--data-dir", str(tmp_path / "two"),
                        "--name", "second")
            while any(alive(pid) for pid in second_workers):  # noqa: ASYNC110 - other processes
                await trio.sleep(0.05)
        finally:
            for pid in second_workers:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
        await until(lambda s: {n["name"]: n["state"] for n in s["nodes"]}["second"] == "ready", port)

        first_workers = children(first.proc.pid)
        assert len(first_workers) >= 1
        first.proc.send_signal(signal.SIGTERM)
        await first.proc.wait()
        assert first.proc.returncode == 0, first.stderr()
        assert not [pid for pid in first_workers if alive(pid)], "workers outlived flowctl up"


async def test_the_local_node_rejoins_as_itself_after_a_restart(cluster, tmp_path):
    port, start = cluster
    with trio.fail_after(120):
        first = await start("first", "--data-dir", str(tmp_path / "one"), "--name", "desk")
        data = await until(lambda s: [n["state"] for n in s["nodes"]] == ["ready"], port)
        node_id = data["nodes"][0]["node_id"]
        first.proc.send_signal(signal.SIGTERM)
        await first.proc.wait()
        assert first.proc.returncode == 0, first.stderr()

        await start("again", "--data-dir", str(tmp_path / "one"), "--name", "desk")
        data = await until(lambda s: [n["state"] for n in s["nodes"]] == ["ready"], port)
        assert [n["node_id"] for n in data["nodes"]] == [node_id]
        credential = tmp_path / "one" / "node" / "node_credential"
        assert stat.S_IMODE(credential.stat().st_mode) == 0o600
        # One enrolling token, not one per start, and its node is the local one.
        code, out, err = await cli("node", "token", "ls", "--json", port=port)
        assert code == 0, err
        assert [(t["name"], t["nodes"]) for t in json.loads(out)] == [("local-desk", [node_id])]


async def test_a_port_held_by_something_else_is_refused(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with trio.fail_after(30):
            code, out, err = await cli("up", "--port", str(port), "--data-dir", str(tmp_path), port=port)
    assert code == 1
    assert "not a flowctl control plane" in err and len(err.strip().splitlines()) == 1
