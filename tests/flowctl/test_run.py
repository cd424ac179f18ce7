"""`flowctl run DIR` as a developer runs it: real `flowctl up` and `flowctl run` processes, a copy of
the echo example as the service, requests through the plane's gateway (issue 16 §3)."""

import json
import os
import shutil
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from packer import pack_dir
from tests.flowctl.test_up import ADMIN, alive, children, cli, env_for, free_port, status, until

ECHO = Path(__file__).resolve().parents[2] / "examples" / "echo"
LIMIT_S = 150


def copy_echo(tmp_path, name="svc", **fields):
    """A copy of examples/echo at tmp_path/name, with service.json fields changed."""
    target = tmp_path / name
    shutil.copytree(ECHO, target, ignore=shutil.ignore_patterns("__pycache__"))
    if fields:
        edit_manifest(target, **fields)
    return target


def edit_manifest(directory, service_id=None, model=None):
    path = directory / "service.json"
    manifest = json.loads(path.read_text())
    if service_id:
        manifest["service_id"] = service_id
    if model:
        manifest["models"][0]["model_id"] = model
    path.write_text(json.dumps(manifest, indent=2))


class Proc:
    """A flowctl child process with its output in files."""

    def __init__(self, tmp_path, name):
        self.out = open(tmp_path / f"{name}.out", "w+b")
        self.err = open(tmp_path / f"{name}.err", "w+b")
        self.proc = None

    async def start(self, nursery, args, port, env=None):
        self.proc = await nursery.start(partial(
            trio.run_process, [sys.executable, "-m", "flowctl", *args], check=False, stdout=self.out,
            stderr=self.err, stdin=subprocess.DEVNULL, env=env or env_for(port)))
        return self

    def stderr(self):
        self.err.seek(0)
        return self.err.read().decode()

    def stdout(self):
        self.out.seek(0)
        return self.out.read().decode()


@pytest.fixture
async def procs(tmp_path):
    """start(name, *args) runs `flowctl ARGS` on one port; every process is stopped after the test."""
    port = free_port()
    started = []
    async with trio.open_nursery() as nursery:

        async def start(name, *args, env=None):
            proc = await Proc(tmp_path, name).start(nursery, args, port, env)
            started.append(proc)
            return proc

        yield port, start
        for p in started:
            if p.proc.returncode is None:
                p.proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(20):
            for p in started:
                await p.proc.wait()
        nursery.cancel_scope.cancel()
    for p in started:
        p.out.close()
        p.err.close()


async def models(port):
    """The model ids /v1/models lists (the plane runs with an anonymous tenant: no key)."""
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://127.0.0.1:{port}/v1/models")
    assert r.status_code == 200, r.text
    return sorted(m["id"] for m in r.json()["data"])


async def chat(port, model, text="hello"):
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                                 json={"model": model, "messages": [{"role": "user", "content": text}]})


async def until_models(port, wanted):
    while True:
        try:
            if (await models(port)) == wanted:
                return
        except httpx.HTTPError:  # not listening yet
            pass
        await trio.sleep(0.1)


async def start_plane(start, port, tmp_path):
    await start("plane", "up", "--port", str(port), "--data-dir", str(tmp_path / "plane"), "--name", "plane-node",
                "--anonymous-tenant", "dev")
    await until(lambda s: [n["state"] for n in s["nodes"]] == ["ready"], port)
    code, token, err = await cli("node", "token", "create", "runs", port=port)
    assert code == 0, err
    return token.strip()


def run_args(directory, port, token, tmp_path, *extra):
    return ("run", str(directory), "--server", f"http://127.0.0.1:{port}", "--token", token,
            "--data-dir", str(tmp_path / "run-data"), "--poll-interval", "0.1", *extra)


def owned(data):
    return {d["service"]: d.get("owner") for d in data["deployments"]}


async def test_run_registers_routes_restarts_on_edits_and_leaves_on_sigterm(procs, tmp_path):
    port, start = procs
    service = copy_echo(tmp_path)
    with trio.fail_after(LIMIT_S):
        token = await start_plane(start, port, tmp_path)
        run = await start("run", *run_args(service, port, token, tmp_path, "--name", "dev-box"))
        await until_models(port, ["echo"])
        reply = await chat(port, "echo", "hello from the gateway")
        assert reply.status_code == 200 and "hello from the gateway" in reply.text
        data = await status(port)
        assert owned(data) == {"echo": "dev-box"}
        assert {n["name"]: n["replicas"] for n in data["nodes"]} == {"dev-box": 0, "plane-node": 0}

        # An edit restarts it: the new model id is what the gateway routes now.
        edit_manifest(service, model="echo-dev")
        await until_models(port, ["echo-dev"])
        assert (await chat(port, "echo-dev")).status_code == 200
        assert (await chat(port, "echo")).status_code == 404

        # A broken edit: a clear error, 503 (not 404) meanwhile, and the watch goes on.
        source = (service / "worker.py").read_text()
        (service / "worker.py").write_text("def broken(:\n" + source)
        await until(lambda s: s["deployments"][0]["replicas"][0]["state"] == "failed", port)
        assert "did not start" in run.stderr() and "SyntaxError" in run.stderr()
        assert (await models(port)) == []
        assert (await chat(port, "echo-dev")).status_code == 503
        (service / "worker.py").write_text(source)
        await until_models(port, ["echo-dev"])
        assert (await chat(port, "echo-dev")).status_code == 200

        workers = children(run.proc.pid)
        assert workers
        run.proc.send_signal(signal.SIGTERM)
        await run.proc.wait()
        assert run.proc.returncode == 0, run.stderr()
        assert (await models(port)) == [] and owned(await status(port)) == {}
        assert not [pid for pid in workers if alive(pid)], "the worker outlived flowctl run"


async def test_a_killed_run_is_dropped_by_the_plane_and_its_worker_swept_by_the_next(procs, tmp_path):
    port, start = procs
    service = copy_echo(tmp_path)
    with trio.fail_after(LIMIT_S):
        token = await start_plane(start, port, tmp_path)
        run = await start("run", *run_args(service, port, token, tmp_path))
        await until_models(port, ["echo"])
        workers = children(run.proc.pid)
        assert workers
        run.proc.send_signal(signal.SIGKILL)
        try:
            # The node's connection ended: its deployment goes at once, and nowhere else.
            data = await until(lambda s: not s["deployments"], port)
            assert (await models(port)) == []
            assert all(n["replicas"] == 0 for n in data["nodes"])
            assert (await chat(port, "echo")).status_code == 404

            # A SIGKILLed run cannot stop its worker; the next run of the directory does.
            again = await start("again", *run_args(service, port, "", tmp_path))
            while any(alive(pid) for pid in workers):  # noqa: ASYNC110 - other processes
                await trio.sleep(0.05)
            await until_models(port, ["echo"])
            again.proc.send_signal(signal.SIGTERM)
            await again.proc.wait()
            assert again.proc.returncode == 0, again.stderr()
        finally:
            for pid in workers:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)


async def test_a_model_the_plane_or_another_node_serves_is_refused(procs, tmp_path):
    port, start = procs
    with trio.fail_after(LIMIT_S):
        token = await start_plane(start, port, tmp_path)
        mine = await start("mine", *run_args(copy_echo(tmp_path, "mine", service_id="mine", model="shared"),
                                             port, token, tmp_path))
        await until_models(port, ["shared"])

        # Another node's model: refused, the first one keeps serving.
        other = copy_echo(tmp_path, "other", service_id="other", model="shared")
        code, _, err = await cli(*run_args(other, port, token, tmp_path), port=port)
        assert code == 1
        assert err.splitlines()[-1] == ("error: the control plane refused other: model 'shared' is already "
                                        f"served by node {owned(await status(port))['mine']!r} (service 'mine')")
        assert (await chat(port, "shared")).status_code == 200

        # A plane-managed deployment's model or service id.
        bundle = pack_dir(ECHO, tmp_path / "dist")
        code, _, err = await cli("publish", str(bundle.path), "--hub", f"http://127.0.0.1:{port}", port=port)
        assert code == 0, err
        code, _, err = await cli("deploy", "echo", port=port)
        assert code == 0, err
        for directory, why in ((copy_echo(tmp_path, "same-model", service_id="another"),
                                "model 'echo' is already served by service 'echo'"),
                               (copy_echo(tmp_path, "same-service", model="echo-x"),
                                "service 'echo' is deployed by the control plane")):
            code, _, err = await cli(*run_args(directory, port, token, tmp_path), port=port)
            assert code == 1 and err.splitlines()[-1].endswith(why), err

        # Once registered, an edit that takes a served model id is an error like a broken edit:
        # the run goes on, and the next edit is registered again.
        mine_dir = tmp_path / "mine"
        edit_manifest(mine_dir, model="echo")
        await until_models(port, ["echo"])  # the plane's own echo only
        while "refused mine: model 'echo' is already served by service 'echo'" not in mine.stderr():  # noqa: ASYNC110
            await trio.sleep(0.1)
        edit_manifest(mine_dir, model="shared")
        await until_models(port, ["echo", "shared"])
        assert mine.proc.returncode is None


async def test_without_a_server_it_starts_an_embedded_plane(procs, tmp_path):
    port, start = procs
    service = copy_echo(tmp_path)
    env = {k: v for k, v in env_for(port).items() if k != "FLOWCTL_ADMIN_KEY"}
    with trio.fail_after(LIMIT_S):
        run = await start("run", "run", str(service), "--port", str(port), "--data-dir", str(tmp_path / "d"),
                          "--anonymous-tenant", "dev", "--poll-interval", "0.1", env=env)
        await until_models(port, ["echo"])
        assert (await chat(port, "echo")).status_code == 200
        assert f"gateway: http://127.0.0.1:{port}/v1" in run.stderr()
        # As `flowctl up` does: a new admin key, alone on stdout, shown this once.
        (admin_key,) = run.stdout().split()
        assert admin_key != ADMIN and "shown only this once" in run.stderr()
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{port}/api/cluster/status",
                                 headers={"Authorization": f"Bearer {admin_key}"})
        assert [(d["service"], d["owner"]) for d in r.json()["deployments"]] == [("echo", r.json()["nodes"][0]["name"])]
        workers = children(run.proc.pid)
        # Twice, as `timeout` does (the child, then its group): the second must not cut the drain short.
        run.proc.send_signal(signal.SIGTERM)
        run.proc.send_signal(signal.SIGTERM)
        await run.proc.wait()
        assert run.proc.returncode == 0, run.stderr()
        assert not [pid for pid in workers if alive(pid)]

        # A port held by that kind of plane: a hint to join it instead.
        held = await start("held", "up", "--port", str(port), "--data-dir", str(tmp_path / "d2"), "--no-node")
        await until(lambda s: True, port)
        code, _, err = await cli("run", str(service), "--port", str(port), "--data-dir", str(tmp_path / "d3"),
                                 port=port)
        assert code == 1 and "--server http://127.0.0.1:" in err and len(err.strip().splitlines()) == 1
        held.proc.send_signal(signal.SIGTERM)


async def test_bad_input_is_one_line_before_anything_starts(tmp_path):
    broken = copy_echo(tmp_path)
    (broken / "service.json").write_text("{")
    cases = [
        (("run", str(tmp_path / "nope")), "is not a directory"),
        (("run", str(broken)), "service.json: is not valid JSON"),
        (("run", str(ECHO), "--token", "fjt_x"), "give its URL with --server"),
        (("run", str(ECHO), "--server", "plane:8080"), "is not an http:// or https:// URL"),
        (("run", str(ECHO), "--server", "http://127.0.0.1:1", "--data-dir", str(tmp_path / "fresh")),
         "a join token is required"),
    ]
    with trio.fail_after(60):
        for args, why in cases:
            code, _, err = await cli(*args, port=1)
            assert code == 1 and why in err and len(err.strip().splitlines()) == 1, (args, err)
