"""The node executor with real parts: a real hub, the packer, the echo worker as a child process."""

import json
import os
import shutil

import httpx
import pytest
import trio

from packer import pack_dir
from runtime.control.messages import Assign, Assignment
from runtime.node.executor import ExecutorSettings, NodeExecutor
from runtime.node.layout import NodeLayout
from tests.polling import wait_until
from tests.runtime.hub.conftest import AUTH, running_hub

ECHO = os.path.join(os.path.dirname(__file__), "..", "..", "..", "examples", "echo")


def pack_echo(tmp_path, version="1.0.0", startup=None):
    src = tmp_path / f"echo-{version}"
    shutil.copytree(ECHO, src)
    manifest = json.loads((src / "service.json").read_text())
    manifest["version"] = version
    if startup:
        manifest["startup_command"] = startup
        manifest["health_check"]["timeout_s"] = 3
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
