"""Real node agents for jobs tests: the echo bundle published to a plane's hub, and nodes that
join that plane (in this process, each in its own cancel scope so a test can kill one)."""

from pathlib import Path

import trio

from packer import pack_dir
from runtime.node.agent import ExecutorSettings, NodeSettings, run_node

ECHO = Path(__file__).resolve().parents[3] / "examples" / "echo"


async def publish_echo(client, auth, tmp_path):
    """Pack examples/echo and publish it (echo@1.0.0, so echo@stable resolves)."""
    bundle = pack_dir(ECHO, tmp_path / "dist")
    r = await client.put("/api/services/echo/1.0.0", headers=auth, content=bundle.path.read_bytes())
    assert r.status_code in (200, 201, 409), r.text


async def start_node(nursery, client, auth, url, data_dir, name, labels=None):
    """A node agent joined to the plane at `url`; returns the cancel scope that kills it."""
    r = await client.post("/api/cluster/tokens", headers=auth, json={"name": f"tok-{name}"})
    assert r.status_code in (200, 201), r.text
    settings = NodeSettings(url=url, token=r.json()["token"], data_dir=data_dir, name=name,
                            executor=ExecutorSettings(grace_s=2), labels=labels or {})
    scope = trio.CancelScope()

    async def node(task_status=trio.TASK_STATUS_IGNORED):
        with scope:
            await run_node(settings, task_status=task_status)

    with trio.fail_after(30):
        await nursery.start(node)
    return scope

