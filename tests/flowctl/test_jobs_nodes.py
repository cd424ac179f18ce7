"""Command jobs on nodes, end to end: a real `flowctl up --no-node` and nodes that joined it with
`flowctl node join` (separate processes). A job with a parameter runs on a node in the echo
bundle's environment; cancel stops its process group within 2 s; a node killed mid-step loses
its attempt, which runs again elsewhere as attempt 2; a plane killed mid-step and restarted
re-attaches the step its node still runs (one attempt, never a second copy)."""

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial

import httpx
import pytest
import trio

from packer import pack_dir
from tests.flowctl.test_up import ADMIN, ECHO, Up, alive, cli, env_for, free_port, status
from tests.polling import wait_until

FAST = ("--lost-after", "3", "--heartbeat-interval", "1")


def job(name, command, *, retries=1):
    return (f'name = "{name}"\n[trigger]\ntype = "manual"\n[parameters.who]\ntype = "string"\ndefault = "x"\n'
            f'[policies]\nretries = {{ max_attempts = {retries}, backoff = "0.2s" }}\n'
            f'[[steps]]\nname = "main"\nservice = "echo@stable"\ncommand = {json.dumps(command)}\n')


class Fleet:
    """A plane (`flowctl up --no-node`) and `flowctl node join` processes, all on one port."""

    def __init__(self, nursery, tmp_path):
        self.nursery, self.tmp_path, self.port = nursery, tmp_path, free_port()
        self.procs: list[Up] = []
        self.plane: Up | None = None

    async def start_plane(self, name="plane"):
        self.plane = Up(self.tmp_path, name)
        await self.plane.start(self.nursery, "--no-node", "--data-dir", str(self.tmp_path / "plane"), *FAST,
                               port=self.port)
        self.procs.append(self.plane)
        with trio.fail_after(60):
            while (await cli("jobs", "ls", port=self.port))[0] != 0:  # noqa: ASYNC110 - another process
                await trio.sleep(0.2)

    async def join(self, name):
        code, out, err = await cli("node", "token", "create", f"tok-{name}", "--json", port=self.port)
        assert code == 0, err
        node = Up(self.tmp_path, name)
        node.proc = await self.nursery.start(partial(
            trio.run_process, [sys.executable, "-m", "flowctl", "node", "join", f"http://127.0.0.1:{self.port}",
                               "--token", json.loads(out)["token"], "--name", name,
                               "--data-dir", str(self.tmp_path / name)],
            check=False, stdout=node.out, stderr=node.err, stdin=subprocess.DEVNULL, env=env_for(self.port)))
        self.procs.append(node)
        return node

    async def setup(self, *definitions):
        bundle = pack_dir(ECHO, self.tmp_path / "dist")
        code, _, err = await cli("publish", str(bundle.path), "--hub", f"http://127.0.0.1:{self.port}", port=self.port)
        assert code == 0, err
        for definition in definitions:
            path = self.tmp_path / "job.toml"
            path.write_text(definition)
            code, _, err = await cli("jobs", "apply", "-f", str(path), port=self.port)
            assert code == 0, err

    async def ready_nodes(self, count):
        while True:
            try:
                if [n["state"] for n in (await status(self.port)).get("nodes", [])].count("ready") >= count:
                    return
            except httpx.HTTPError:
                pass
            await trio.sleep(0.2)


@pytest.fixture
async def fleet(tmp_path):
    async with trio.open_nursery() as nursery:
        fleet = Fleet(nursery, tmp_path)
        yield fleet
        for p in fleet.procs:
            if p.proc.returncode is None:
                p.proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(20):
            for p in fleet.procs:
                await p.proc.wait()
        nursery.cancel_scope.cancel()
    for p in fleet.procs:
        p.out.close()
        p.err.close()


async def run_detail(port, run_id):
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://127.0.0.1:{port}/api/v1/runs/{run_id}",
                             headers={"Authorization": f"Bearer {ADMIN}"})
        return r.json()


async def ended(port, run_id):
    while (run := await run_detail(port, run_id))["state"] in ("pending", "running"):  # noqa: ASYNC110
        await trio.sleep(0.2)
    return run


async def test_a_parameterised_job_runs_on_a_joined_node_and_cancel_stops_it(fleet, tmp_path):
    marker = tmp_path / "child.pid"
    with trio.fail_after(120):
        await fleet.start_plane()
        await fleet.join("w1")
        await fleet.ready_nodes(1)
        await fleet.setup(job("hello", ["sh", "-c", "echo hello $FLOWCTL_PARAM_WHO from $(pwd)"]),
                          job("sleeper", ["sh", "-c", f"sleep 120 & echo $! > {marker}; wait"]))
        code, out, err = await cli("jobs", "trigger", "hello", "--param", "who=ada", "--wait", port=fleet.port)
        assert code == 0, err
        code, out, err = await cli("jobs", "runs", "--job", "hello", "--json", port=fleet.port)
        run_id = json.loads(out)[0]["run_id"]
        code, logs, err = await cli("jobs", "logs", run_id, port=fleet.port)
        assert f"hello ada from {tmp_path / 'w1'}" in logs, logs  # in the node's installed echo tree

        code, out, err = await cli("jobs", "trigger", "sleeper", port=fleet.port)
        run_id = out.split()[1]
        await wait_until(lambda: marker.exists() and marker.read_text().strip(), interval=0.05)
        child = int(marker.read_text())
        began = time.monotonic()
        async with httpx.AsyncClient() as client:  # what `flowctl jobs cancel` sends, timed without its start-up
            r = await client.post(f"http://127.0.0.1:{fleet.port}/api/v1/runs/{run_id}/cancel",
                                  headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
        assert r.status_code == 200, r.text
        await wait_until(lambda: not alive(child), interval=0.02)
    assert time.monotonic() - began < 2.0
    assert (await run_detail(fleet.port, run_id))["state"] == "cancelled"


async def _first_attempt_on_one_of_two(fleet, marker, name, command):
    """A plane, nodes w1 and w2, and job `name` triggered; once attempt 1 wrote "PID DIR" to
    `marker`: (nodes, run id, that PID, the node running it)."""
    await fleet.start_plane()
    nodes = {"w1": await fleet.join("w1"), "w2": await fleet.join("w2")}
    await fleet.ready_nodes(2)
    await fleet.setup(job(name, command, retries=2))
    code, out, err = await cli("jobs", "trigger", name, port=fleet.port)
    run_id = out.split()[1]
    await wait_until(lambda: marker.exists() and marker.read_text().strip(), interval=0.05)
    pid, where = marker.read_text().split()
    first = next(n for n in nodes if str(marker.parent / n) in where)
    return nodes, run_id, int(pid), first


async def test_a_node_killed_mid_step_is_lost_and_attempt_2_runs_on_the_other(fleet, tmp_path):
    marker = tmp_path / "where"
    command = ["sh", "-c", f'if [ "$FLOWCTL_ATTEMPT" = 1 ]; then echo "$$ $(pwd)" > {marker}; sleep 120; '
                           'else echo second from $(pwd); fi']
    orphan = None
    try:
        with trio.fail_after(150):
            nodes, run_id, orphan, first = await _first_attempt_on_one_of_two(fleet, marker, "moving", command)
            other = next(name for name in nodes if name != first)
            nodes[first].proc.send_signal(signal.SIGKILL)
            run = await ended(fleet.port, run_id)
    finally:
        if orphan is not None and alive(orphan):
            os.kill(orphan, signal.SIGKILL)  # what the killed node left behind
    assert run["state"] == "succeeded", run
    one, two = run["steps"][0]["attempts"]
    assert one["state"] == "lost" and f"node {first} was lost" in one["reason"], one
    assert two["state"] == "succeeded" and two["attempt"] == 2
    code, logs, _ = await cli("jobs", "logs", run_id, port=fleet.port)
    assert f"second from {tmp_path / other}" in logs, logs


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
async def test_a_plane_killed_mid_step_re_attaches_it_after_its_restart(fleet, tmp_path, how):
    go, count = tmp_path / "go", tmp_path / "count"
    command = ["sh", "-c", f"echo started >> {count}; while [ ! -e {go} ]; do sleep 0.1; done; echo finished"]
    with trio.fail_after(150):
        await fleet.start_plane("first")
        await fleet.join("w1")
        await fleet.ready_nodes(1)
        await fleet.setup(job("long", command, retries=2))
        code, out, err = await cli("jobs", "trigger", "long", port=fleet.port)
        run_id = out.split()[1]
        await wait_until(lambda: count.exists(), interval=0.05)
        while (await run_detail(fleet.port, run_id))["steps"][0]["attempts"][0]["state"] != "running":  # noqa: ASYNC110
            await trio.sleep(0.1)
        fleet.plane.proc.send_signal(how)  # killed, or stopped cleanly: the node keeps its step either way
        await fleet.plane.proc.wait()
        await fleet.start_plane("second")
        await fleet.ready_nodes(1)
        go.write_text("")
        run = await ended(fleet.port, run_id)
    assert run["state"] == "succeeded", run
    [attempt] = run["steps"][0]["attempts"]
    assert attempt["state"] == "succeeded"
    assert count.read_text() == "started\n"  # one process, never a second copy


async def test_a_silent_node_back_after_its_attempt_was_retried_stops_the_stale_process(fleet, tmp_path):
    marker = tmp_path / "where"
    command = ["sh", "-c", f'if [ "$FLOWCTL_ATTEMPT" = 1 ]; then sleep 120 & echo "$! $(pwd)" > {marker}; wait; '
                           'else echo second; fi']
    orphan = None
    try:
        with trio.fail_after(150):
            nodes, run_id, orphan, first = await _first_attempt_on_one_of_two(fleet, marker, "frozen", command)
            nodes[first].proc.send_signal(signal.SIGSTOP)  # silent, connection open: lost after 3 s
            try:
                run = await ended(fleet.port, run_id)
            finally:
                nodes[first].proc.send_signal(signal.SIGCONT)
            await wait_until(lambda: not alive(orphan), interval=0.05)  # told to stop once it is back
            while not (await run_detail(fleet.port, run_id))["steps"][0]["attempts"][0]["late_result"]:  # noqa: ASYNC110
                await trio.sleep(0.1)
    finally:
        if orphan is not None and alive(orphan):
            os.kill(orphan, signal.SIGKILL)
    assert run["state"] == "succeeded", run
    one = (await run_detail(fleet.port, run_id))["steps"][0]["attempts"][0]
    late = one["late_result"] if isinstance(one["late_result"], dict) else json.loads(one["late_result"])
    assert one["state"] == "lost" and late["state"] == "cancelled", one
