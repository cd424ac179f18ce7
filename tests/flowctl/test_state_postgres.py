"""`flowctl serve --state postgresql://...` as a user runs it: publish, deploy, chat, restart, nothing lost.

Real processes throughout: the plane (`flowctl serve`), a node (`flowctl node join`) running
examples/echo, and the session's real PostgreSQL holding the plane's state.
"""

import json
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from packer import pack_dir
from tests.flowctl.test_up import free_port

ADMIN = "state-admin-key"
ECHO = Path(__file__).resolve().parents[2] / "examples" / "echo"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
pytestmark = pytest.mark.engines


def env_for(port):
    return {**os.environ, "FLOWCTL_ADMIN_KEY": ADMIN, "FLOWCTL_TOKEN": ADMIN,
            "FLOWCTL_SERVER": f"http://127.0.0.1:{port}", "FLOWCTL_CONFIG": "/nonexistent/flowctl.toml"}


async def cli(*args, port):
    result = await trio.run_process([sys.executable, "-m", "flowctl", *args], capture_stdout=True,
                                    capture_stderr=True, check=False, env=env_for(port), stdin=subprocess.DEVNULL)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


class Proc:
    """A flowctl process with its output in a file."""

    def __init__(self, tmp_path, name):
        self.log = open(tmp_path / f"{name}.log", "w+b")
        self.proc = None

    async def start(self, nursery, *args, port):
        self.proc = await nursery.start(partial(
            trio.run_process, [sys.executable, "-m", "flowctl", *args], check=False, stdout=self.log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env_for(port)))
        return self

    async def stop(self):
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(20):
                await self.proc.wait()
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()

    def output(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


async def until(client, path, predicate):
    """Poll GET `path` until `predicate(json)` holds (the caller bounds the wait)."""
    while True:
        try:
            reply = await client.get(path, headers=AUTH)
            if reply.status_code == 200 and predicate(reply.json()):
                return reply.json()
        except httpx.HTTPError:
            pass
        await trio.sleep(0.1)


async def chat(client, key):
    return await client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                             json={"model": "echo", "messages": [{"role": "user", "content": "still here"}]})


async def test_a_plane_on_postgresql_keeps_keys_deployments_and_catalog_across_a_restart(postgres_url, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "plane"
    serve = ["serve", "--roles", "hub,scheduler,gateway,jobs", "--port", str(port), "--data-dir", str(data),
             "--state", postgres_url, "--heartbeat-interval", "0.5"]
    bundle = pack_dir(ECHO, tmp_path / "dist")
    procs: list[Proc] = []
    async with trio.open_nursery() as nursery, httpx.AsyncClient(base_url=url, timeout=30) as client:
        try:
            with trio.fail_after(150):
                procs.append(plane := await Proc(tmp_path, "plane").start(nursery, *serve, port=port))
                await until(client, "/api/cluster/status", lambda s: True)
                code, _, err = await cli("publish", str(bundle.path), "--hub", url, port=port)
                assert code == 0, err
                code, token, err = await cli("node", "token", "create", "desk", port=port)
                assert code == 0, err
                procs.append(await Proc(tmp_path, "node").start(
                    nursery, "node", "join", url, "--token", token.strip(), "--data-dir", str(tmp_path / "node"),
                    "--name", "desk", port=port))
                await until(client, "/api/cluster/status", lambda s: [n["state"] for n in s["nodes"]] == ["ready"])
                code, out, err = await cli("deploy", "echo", "--json", port=port)
                assert code == 0, err
                assert json.loads(out)["status"]["ready"] == 1
                assert (await client.post("/api/gateway/tenants", headers=AUTH, json={"name": "acme"})).status_code == 201
                key = (await client.post("/api/gateway/keys", headers=AUTH, json={"tenant": "acme"})).json()["key"]
                first = await chat(client, key)
                assert first.status_code == 200, first.text
                assert "still here" in first.json()["choices"][0]["message"]["content"]

                await plane.stop()
                assert plane.proc.returncode == 0, plane.output()
                # The state went to PostgreSQL: none of the stores' SQLite files was written.
                assert not [p.name for p in data.rglob("*") if p.name.endswith((".db", ".sqlite3"))], list(data.rglob("*"))

                procs.append(plane := await Proc(tmp_path, "plane-again").start(nursery, *serve, port=port))
                status = await until(client, "/api/cluster/status",
                                     lambda s: [n["state"] for n in s["nodes"]] == ["ready"]
                                     and s["deployments"] and s["deployments"][0]["ready"] == 1)
                assert [d["service"] for d in status["deployments"]] == ["echo"]
                again = await chat(client, key)  # the same key, read back from PostgreSQL
                assert again.status_code == 200, again.text
                services = (await client.get("/api/services")).json()
                assert [s["service_id"] for s in services] == ["echo"]
                assert (await chat(client, key[:-1] + ("A" if key[-1] != "A" else "B"))).status_code == 401
        finally:
            for proc in reversed(procs):
                await proc.stop()
            for proc in procs:
                proc.log.close()
            nursery.cancel_scope.cancel()


async def _serve_fails(tmp_path, *args):
    port = free_port()
    result = await trio.run_process(
        [sys.executable, "-m", "flowctl", "serve", "--roles", "hub,scheduler,gateway", "--port", str(port),
         "--data-dir", str(tmp_path / "plane"), *args],
        capture_stdout=True, capture_stderr=True, check=False, env=env_for(port), stdin=subprocess.DEVNULL)
    return result.returncode, result.stderr.decode()


async def test_a_plane_refuses_a_schema_newer_than_it_knows_in_one_line(postgres_url, tmp_path):
    from hub_store import sql
    from runtime.scheduler.store import MIGRATIONS

    state = sql.State.parse(postgres_url)
    try:
        newer = sql.Migrations("cluster", (*MIGRATIONS.steps, "CREATE TABLE later (x TEXT)"))
        sql.open_store(state, newer, "cluster.db").close()
    finally:
        state.close()
    with trio.fail_after(60):
        code, err = await _serve_fails(tmp_path, "--state", postgres_url)
    assert code == 1, err
    assert err.strip().splitlines()[-1] == ("error: the cluster store was written by a newer flowctl "
                                            f"(schema {MIGRATIONS.latest + 1} > {MIGRATIONS.latest}); upgrade flowctl")
    assert "Traceback" not in err


@pytest.mark.parametrize("url, words", [
    ("mysql://db/flow", "error: state URL 'mysql://db/flow': the scheme must be sqlite:// or postgresql://"),
    ("postgresql://flow:hunter2@127.0.0.1:1/flow?pool_timeout=1", "error: cannot connect to the state database"),
])
async def test_a_bad_or_unreachable_state_is_one_line(tmp_path, url, words):
    with trio.fail_after(60):
        code, err = await _serve_fails(tmp_path, "--state", url)
    assert code == 1 and words in err and "Traceback" not in err and "hunter2" not in err, err
