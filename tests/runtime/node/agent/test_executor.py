"""The node executor with real parts: a real hub, the packer, the echo worker as a child process."""

import json
import os
import shutil

import httpx
import pytest
import trio

from packer import pack_dir
from runtime.control.messages import Assign, Assignment
from runtime.node.agent.executor import ExecutorSettings, NodeExecutor
from runtime.node.packages import NodeLayout
from tests.polling import wait_until
from tests.runtime.hub.conftest import AUTH, running_hub

ECHO = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "examples", "echo")


def pack_echo(tmp_path, version="1.0.0", startup=None, env=None):
    src = tmp_path / f"echo-{version}"
    shutil.copytree(ECHO, src)
    manifest = json.loads((src / "service.json").read_text())
    manifest["version"] = version
    if startup:
        manifest["startup_command"] = startup
        manifest["health_check"]["timeout_s"] = 3
    if env:
        manifest["env"] = env
    (src / "service.json").write_text(json.dumps(manifest))
    return pack_dir(src, tmp_path / "dist")


async def publish(url, bundle):
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        m = bundle.manifest
        r = await client.put(f"/api/services/{m.service_id}/{m.version}", headers=AUTH,
                             content=bundle.path.read_bytes())
        assert r.status_code in (200, 201), r.text


class Reports:
    def __init__(self):
        self.seen = []

    def __call__(self, report):
        self.seen.append(report)

    def last(self, replica_id):
        found = [r for r in self.seen if r.replica_id == replica_id]
        return found[-1] if found else None


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
async def hub_url(tmp_path):
    async with running_hub(tmp_path / "hub") as (url, _):
        yield url


async def test_installs_runs_health_gates_and_stops_a_replica(tmp_path, hub_url):
    await publish(hub_url, pack_echo(tmp_path, "1.0.0"))
    layout = NodeLayout.create(tmp_path / "node")
    reports = Reports()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            executor = NodeExecutor(layout, nursery, ExecutorSettings(grace_s=2))
            executor.apply(Assign(1, (Assignment("r1", "echo", "1.0.0", 1),)), hub_url, reports)
            await wait_until(lambda: getattr(reports.last("r1"), "state", None) == "ready")
            states = [r.state for r in reports.seen]
            assert states[:2] == ["installing", "starting"] and states[-1] == "ready"
            assert reports.last("r1").models == ("echo",)
            assert layout.current_version("echo") == "1.0.0"
            assert (tmp_path / "node" / "logs" / "echo.log").exists()

            url = executor.worker_url("r1")
            async with httpx.AsyncClient() as client:
                health = (await client.get(url + "/health")).json()
            assert reports.last("r1").max_concurrency == health["max_concurrency"]
            installed, running = executor.inventory()
            assert [(v.service_id, v.version) for v in installed] == [("echo", "1.0.0")]
            assert [r.replica_id for r in running] == ["r1"]

            port = int(url.rsplit(":", 1)[1])
            executor.apply(Assign(2, ()), hub_url, reports)  # no longer assigned: stopped
            assert executor.worker_url("r1") is None

            async def port_closed():
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    return True
                await stream.aclose()
                return False

            while not await port_closed():  # noqa: ASYNC110 - waiting for a child process to exit
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()


async def test_a_version_that_never_gets_healthy_is_reported_and_current_stays(tmp_path, hub_url):
    await publish(hub_url, pack_echo(tmp_path, "1.0.0"))
    await publish(hub_url, pack_echo(tmp_path, "1.1.0", startup="python -c 'import sys; print(\"boom\"); sys.exit(3)'"))
    layout = NodeLayout.create(tmp_path / "node")
    reports = Reports()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            executor = NodeExecutor(layout, nursery, ExecutorSettings(grace_s=1, retry_initial_s=30))
            executor.apply(Assign(1, (Assignment("r1", "echo", "1.0.0", 1),)), hub_url, reports)
            await wait_until(lambda: getattr(reports.last("r1"), "state", None) == "ready")
            executor.apply(Assign(2, (Assignment("r1", "echo", "1.0.0", 1), Assignment("r2", "echo", "1.1.0", 1))),
                           hub_url, reports)
            await wait_until(lambda: getattr(reports.last("r2"), "state", None) == "failed")
            detail = reports.last("r2").detail
            assert "exited with code 3" in detail and "boom" in detail
            assert layout.current_version("echo") == "1.0.0"  # the new version never became current
            assert reports.last("r1").state == "ready"
            nursery.cancel_scope.cancel()


SECRETS = {"FLOWCTL_ADMIN_KEY": "fck_admin-secret", "FLOWCTL_TOKEN": "plane-token-secret",
           "FLOWCTL_JOIN_TOKEN": "fjt_join-secret", "AWS_SECRET_ACCESS_KEY": "aws-secret"}


def proc_environ(pid):
    raw = open(f"/proc/{pid}/environ", "rb").read()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc/PID/environ")
async def test_a_worker_sees_none_of_the_nodes_secrets(tmp_path, hub_url, monkeypatch):
    random_secret = "SECRET_" + os.urandom(6).hex().upper()
    for name, value in {**SECRETS, random_secret: "shh", "OPERATOR_EXTRA": "passed", "LC_ALL": "C",
                        "OMP_NUM_THREADS": "1"}.items():
        monkeypatch.setenv(name, value)
    await publish(hub_url, pack_echo(tmp_path, "1.0.0", env={"ECHO_MAX_CONCURRENCY": "3"}))
    layout = NodeLayout.create(tmp_path / "node")
    reports = Reports()
    settings = ExecutorSettings(grace_s=2, worker_env_passthrough=("OPERATOR_EXTRA",))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            executor = NodeExecutor(layout, nursery, settings)
            executor.apply(Assign(1, (Assignment("r1", "echo", "1.0.0", 1),)), hub_url, reports)
            await wait_until(lambda: getattr(reports.last("r1"), "state", None) == "ready")
            pid = int((layout.root / "run" / "r1.pid").read_text().split()[0])
            env = proc_environ(pid)
            assert reports.last("r1").max_concurrency == 3  # the bundle's declared env took effect
            nursery.cancel_scope.cancel()
    assert not set(SECRETS) & set(env) and random_secret not in env
    assert not any(value in env.values() for value in (*SECRETS.values(), "shh"))
    assert env["PATH"] == os.environ["PATH"] and env["LC_ALL"] == "C" and env["OMP_NUM_THREADS"] == "1"
    assert env["OPERATOR_EXTRA"] == "passed"  # worker_env_passthrough
    assert env["ECHO_MAX_CONCURRENCY"] == "3"  # service.json env
    assert env["FLOWCTL_TEST_RUN"] == os.environ["FLOWCTL_TEST_RUN"]  # the suite's leak guard still sees it
    assert {k: env[k] for k in ("FLOWCTL_HOST", "FLOWCTL_SERVICE_ID", "FLOWCTL_SERVICE_VERSION",
                                "FLOWCTL_REPLICA_ID")} == {
        "FLOWCTL_HOST": "127.0.0.1", "FLOWCTL_SERVICE_ID": "echo", "FLOWCTL_SERVICE_VERSION": "1.0.0",
        "FLOWCTL_REPLICA_ID": "r1"}
    assert int(env["FLOWCTL_PORT"]) > 0 and env["FLOWCTL_SERVICE_DIR"].endswith("/echo/1.0.0")
    assert env["MODELS_DIR"] == env["FLOWCTL_SERVICE_DIR"] + "/models"
