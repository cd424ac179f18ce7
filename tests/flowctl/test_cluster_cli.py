"""`flowctl deploy / scale / undeploy / status / node token` as a user runs them (subprocesses)."""

import json
import os
import subprocess
import sys
from functools import partial

import httpx
import pytest
import trio

from runtime.node.agent import AgentConfig, JoinRefused, run_agent
from runtime.plane import PlaneSettings, serve_control_plane
from tests.hub_store.bundles import make_bundle
from tests.runtime.scheduler.test_cluster import FakeExecutor

ADMIN = "cli-admin-key"


async def flowctl(*args, server):
    env = {**os.environ, "FLOWCTL_SERVER": server, "FLOWCTL_TOKEN": ADMIN,
           "FLOWCTL_CONFIG": "/nonexistent/flowctl.toml"}
    result = await trio.run_process([sys.executable, "-m", "flowctl", *args], capture_stdout=True,
                                    capture_stderr=True, check=False, env=env, stdin=subprocess.DEVNULL)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


@pytest.fixture
async def plane(nursery, tmp_path):
    settings = PlaneSettings(data_dir=tmp_path / "plane", port=0, heartbeat_interval=0.2)
    handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))
    async with httpx.AsyncClient(base_url=handle.url) as client:
        bundle = make_bundle(tmp_path, "1.0.0", port=None)  # no declared port: replicas may share a node
        await client.put("/api/services/echo/1.0.0", content=bundle.path.read_bytes(),
                         headers={"Authorization": f"Bearer {ADMIN}"})
    return handle.url


async def test_token_deploy_status_scale_undeploy(plane, nursery):
    with trio.fail_after(60):
        code, out, err = await flowctl("node", "token", "create", "desk", "--ttl", "1d", server=plane)
        assert code == 0, err
        token = out.strip()
        assert token.startswith("fjt_") and "shown only this once" in err
        code, out, _ = await flowctl("node", "token", "ls", "--json", server=plane)
        assert code == 0 and [t["name"] for t in json.loads(out)] == ["desk"]

        config = AgentConfig(url=plane, token=token, node_id="n1", name="desk")
        refused = []
        ended = trio.Event()

        async def agent(task_status=trio.TASK_STATUS_IGNORED):
            try:
                await run_agent(config, FakeExecutor("http://127.0.0.1:1", models=("echo-model",)),
                                task_status=task_status)
            except JoinRefused as exc:
                refused.append(exc)
            ended.set()

        await nursery.start(agent)
        code, out, _ = await flowctl("node", "token", "ls", "--json", server=plane)
        assert code == 0 and [t["nodes"] for t in json.loads(out)] == [["n1"]]

        code, out, err = await flowctl("deploy", "echo", "--replicas", "1", "--json", server=plane)
        assert code == 0, err
        dep = json.loads(out)
        assert dep["version"] == "1.0.0" and dep["status"]["ready"] == 1

        code, out, err = await flowctl("status", "--json", server=plane)
        assert code == 0, err
        status = json.loads(out)
        assert {"name", "state"} <= set(status["nodes"][0])
        assert {"service", "version", "desired", "ready"} <= set(status["deployments"][0])
        assert status["models"][0]["model"] == "echo-model"

        code, out, err = await flowctl("status", server=plane)
        assert code == 0 and "desk" in out and "echo-model" in out and "1/1" in out

        code, out, err = await flowctl("scale", "echo", "2", server=plane)
        assert code == 0 and "2 replica(s)" in out
        code, out, err = await flowctl("undeploy", "echo", server=plane)
        assert code == 0 and "undeployed echo" in out
        code, out, err = await flowctl("node", "token", "revoke", "desk", server=plane)
        assert code == 0
        await ended.wait()  # revoking the token disconnected the node it enrolled, for good
        assert "revoked this node" in str(refused[0])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["deploy", "nope", "--no-wait"], "the hub has no nope@latest (publish it first) (HTTP 404)"),
        (["undeploy", "echo"], "no deployment of 'echo' (HTTP 404)"),
        (["node", "token", "create", "bad name"], "token name 'bad name'"),
        (["node", "token", "create", "x", "--ttl", "soon"], "duration 'soon' is not a positive number"),
    ],
)
async def test_errors_are_one_line_and_exit_1(plane, args, message):
    with trio.fail_after(30):
        code, out, err = await flowctl(*args, server=plane)
    assert code == 1, (out, err)
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


async def test_wrong_admin_key_and_unreachable_plane(plane):
    with trio.fail_after(30):
        code, _, err = await flowctl("status", "--token", "wrong", server=plane)
        assert code == 1 and "admin key" in err and "HTTP 401" in err
        code, _, err = await flowctl("status", server="http://127.0.0.1:1")
        assert code == 1 and "is unreachable" in err


async def _join(plane, nursery, name):
    """A stand-in node named `name` joined to the plane (its token made over the API)."""
    async with httpx.AsyncClient(base_url=plane, headers={"Authorization": f"Bearer {ADMIN}"}) as client:
        token = (await client.post("/api/cluster/tokens", json={"name": name})).json()["token"]
    config = AgentConfig(url=plane, token=token, node_id=f"id-{name}", name=name, backoff_initial=0.05)
    await nursery.start(run_agent, config, FakeExecutor("http://127.0.0.1:1", models=("echo-model",)))


async def test_an_upgrade_keeps_the_replica_count_unless_told(plane, nursery, tmp_path):
    with trio.fail_after(60):
        await _join(plane, nursery, "desk")
        async with httpx.AsyncClient(base_url=plane, headers={"Authorization": f"Bearer {ADMIN}"}) as client:
            bundle = make_bundle(tmp_path, "1.1.0", port=None)
            await client.put("/api/services/echo/1.1.0", content=bundle.path.read_bytes())
        code, out, err = await flowctl("deploy", "echo@1.0.0", "--json", server=plane)
        assert code == 0 and json.loads(out)["replicas"] == 1, err
        code, out, err = await flowctl("scale", "echo", "3", server=plane)
        assert code == 0, err
        code, out, err = await flowctl("deploy", "echo@1.1.0", "--json", server=plane)
        assert code == 0, err
        dep = json.loads(out)
        assert dep["replicas"] == 3 and dep["status"]["ready"] == 3
        code, out, err = await flowctl("deploy", "echo@1.1.0", "-r", "2", "--no-wait", server=plane)
        assert code == 0 and "echo@1.1.0: 2 replica(s)" in out, err



async def test_deploy_refuses_a_node_that_does_not_exist(plane, nursery):
    with trio.fail_after(60):
        await _join(plane, nursery, "desk")
        refusal = "no node named 'ghost' has joined this plane (nodes: desk) (HTTP 400)"
        code, out, err = await flowctl("deploy", "echo", "--node", "ghost", server=plane)
        assert code == 1 and refusal in err and len(err.strip().splitlines()) == 1, (out, err)
        code, out, err = await flowctl("deploy", "echo", "-r", "2", server=plane)
        assert code == 0, err
        code, out, err = await flowctl("deploy", "echo", "--node", "ghost", server=plane)  # an upgrade
        assert code == 1 and refusal in err and "replica(s) on ghost" not in out, (out, err)
        code, out, err = await flowctl("deploy", "echo", "--node", "id-desk", server=plane)
        assert code == 0 and "2 replica(s) on id-desk" in out, err


async def test_an_upgrade_keeps_the_node_pin_unless_told(plane, nursery):
    with trio.fail_after(60):
        await _join(plane, nursery, "desk")
        code, out, err = await flowctl("deploy", "echo", "--node", "desk", "--no-wait", server=plane)
        assert code == 0 and "1 replica(s) on desk" in out, err
        code, out, err = await flowctl("deploy", "echo@1.0.0", "--no-wait", "--json", server=plane)
        assert code == 0 and json.loads(out)["nodes"] == ["desk"], err
        code, out, err = await flowctl("deploy", "echo", "--node", "desk", "--any-node", server=plane)
        assert code == 2 and "--any-node" in err
        code, out, err = await flowctl("deploy", "echo", "--any-node", "--no-wait", "--json", server=plane)
        assert code == 0 and json.loads(out)["nodes"] == [], err
        async with httpx.AsyncClient(base_url=plane, headers={"Authorization": f"Bearer {ADMIN}"}) as client:
            pinned = await client.post("/api/deployments", json={"service": "echo", "nodes": ["desk"]})
            kept = await client.post("/api/deployments", json={"service": "echo"})
            cleared = await client.post("/api/deployments", json={"service": "echo", "nodes": []})
        assert [r.json()["nodes"] for r in (pinned, kept, cleared)] == [["desk"], ["desk"], []]


async def test_deploy_track_follows_a_channel_and_refuses_a_version_with_it(plane, nursery):
    with trio.fail_after(60):
        await _join(plane, nursery, "desk")
        code, out, err = await flowctl("deploy", "echo", "--track", "stable", "--json", server=plane)
        assert code == 0 and json.loads(out)["track"] == "stable", err
        code, out, err = await flowctl("deploy", "echo", "--no-wait", server=plane)
        assert code == 0 and "echo@1.0.0 (follows stable): 1 replica(s)" in out, err
        code, out, err = await flowctl("deploy", "echo@1.0.0", "--track", "stable", server=plane)
        assert code == 2 and "give @1.0.0 or --track stable, not both" in err
        code, out, err = await flowctl("deploy", "echo", "--track", "nightly", server=plane)
        assert code == 2 and "'nightly' is not one of: stable, latest, none" in err
        code, out, err = await flowctl("deploy", "echo", "--track", "none", "--no-wait", "--json", server=plane)
        assert code == 0 and json.loads(out)["track"] is None, err
        code, out, err = await flowctl("status", "--json", server=plane)
        assert json.loads(out)["deployments"][0]["track"] is None
