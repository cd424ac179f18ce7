"""A node's composition root: its layout, its executor and its agent, in one nursery."""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

import trio

from runtime.control.messages import Welcome
from runtime.exception_groups import collapse
from runtime.node import orphans
from runtime.node.agent import AgentConfig, run_agent
from runtime.node.executor import ExecutorSettings, NodeExecutor
from runtime.node.layout import NodeLayout

NODE_ID_FILE = "node_id"


@dataclass(frozen=True)
class NodeSettings:
    """How this node joins a control plane."""

    url: str
    token: str
    data_dir: Path
    name: str = ""
    agent_version: str = "0"
    executor: ExecutorSettings | None = None


def node_identity(data_dir: Path) -> str:
    """This node's stable id, created on first use and kept in `data_dir/node_id`."""
    path = data_dir / NODE_ID_FILE
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if len(existing) == 16 and all(c in "0123456789abcdef" for c in existing):
        return existing
    data_dir.mkdir(parents=True, exist_ok=True)
    node_id = secrets.token_hex(8)
    tmp = path.with_name(f".{NODE_ID_FILE}.{os.getpid()}")
    tmp.write_text(node_id + "\n")
    os.replace(tmp, path)
    return node_id


async def run_node(settings: NodeSettings, *,
                   task_status: trio.TaskStatus[Welcome] = trio.TASK_STATUS_IGNORED) -> None:
    """Join the control plane and run what it assigns, until cancelled.

    `task_status.started(welcome)` after the first successful join.

    Cancellation: every worker is stopped (SIGTERM, then SIGKILL after the grace period).
    Error handling: JoinRefused for a refused token; connection trouble is retried.
    """
    layout = await trio.to_thread.run_sync(NodeLayout.create, settings.data_dir)
    await orphans.sweep(layout.root / "run")
    node_id = await trio.to_thread.run_sync(node_identity, settings.data_dir)
    config = AgentConfig(url=settings.url, token=settings.token, node_id=node_id,
                         name=settings.name or socket.gethostname(), agent_version=settings.agent_version)
    with collapse():
        async with trio.open_nursery() as nursery:
            executor = NodeExecutor(layout, nursery, settings.executor)
            welcome = await nursery.start(run_agent, config, executor)
            task_status.started(welcome)
