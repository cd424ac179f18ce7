"""A job leader that dies with an attempt's end in flight: its successor asks the attempt's node
again, and the node answers with how it ended; the step never runs a second time.

The plane is in this process (so the report can be lost exactly where a SIGKILL would lose it:
received, never recorded), the node is a real node agent, the step a real process.
"""

import httpx
import trio

from runtime.control.messages import JobReport
from runtime.jobs.node_executor import NodeExecutor
from runtime.plane import PlaneSettings, serve_control_plane
from tests.polling import wait_until
from tests.runtime.jobs.nodes import publish_echo, start_node

ADMIN = "jobs-resend-admin"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


async def _plane(nursery, data_dir, port=0):
    """A plane on `data_dir`; returns its handle and an async function that stops it (and waits)."""
    settings = PlaneSettings(data_dir=data_dir, port=port, roles=("hub", "scheduler", "jobs"),
                             heartbeat_interval=0.2, lost_after=5.0)
    scope, ended = trio.CancelScope(), trio.Event()

    async def plane(task_status=trio.TASK_STATUS_IGNORED):
        try:
            with scope:
                await serve_control_plane(settings, admin_key=ADMIN, task_status=task_status)
        finally:
            ended.set()

    async def stop():
        scope.cancel()
        await ended.wait()

    with trio.fail_after(30):
        handle = await nursery.start(plane)
    return handle, stop


async def test_an_end_the_dead_leader_never_recorded_is_asked_for_again_not_run_again(nursery, tmp_path, monkeypatch):
    count = tmp_path / "count"
    lost: list[JobReport] = []
    record = NodeExecutor.on_message

    def on_message(self, node_id, message):
        if isinstance(message, JobReport) and message.state != "running" and not lost:
            lost.append(message)  # received as the plane died: never recorded
            return
        record(self, node_id, message)

    monkeypatch.setattr(NodeExecutor, "on_message", on_message)
    handle, stop_first = await _plane(nursery, tmp_path / "plane")
    port = int(handle.url.rsplit(":", 1)[1])
    definition = {"name": "once", "trigger": {"type": "manual"},
                  "policies": {"retries": {"max_attempts": 2, "backoff": "0.1s"}},
                  "steps": [{"name": "main", "service": "echo@stable",
                             "command": ["sh", "-c", f"echo ran >> {count}"]}]}
    with trio.fail_after(90):
        async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
            await publish_echo(client, AUTH, tmp_path)
            await start_node(nursery, client, AUTH, handle.url, tmp_path / "n1", "n1")
            assert (await client.put("/api/v1/jobs/once", headers=AUTH, json=definition)).status_code in (200, 201)
            r = await client.post("/api/v1/jobs/once/trigger", headers=AUTH, json={})
            assert r.status_code == 202, r.text
            run_id = r.json()["run_id"]
            await wait_until(lambda: lost)
        await stop_first()  # the leader dies with the end unrecorded
        handle, _ = await _plane(nursery, tmp_path / "plane", port)
        async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
            async def ended():
                return (await client.get(f"/api/v1/runs/{run_id}", headers=AUTH)).json()

            while (run := await ended())["state"] in ("pending", "running"):  # noqa: ASYNC110 - the plane's
                await trio.sleep(0.05)
    assert run["state"] == "succeeded", run
    assert [(a["attempt"], a["state"]) for a in run["steps"][0]["attempts"]] == [(1, "succeeded")]
    assert count.read_text() == "ran\n"  # one process: asked again, not run again
