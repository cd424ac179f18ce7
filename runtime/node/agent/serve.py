"""A node's composition root: its layout, its executor and its agent, in one nursery."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import trio

from runtime.control.messages import Welcome
from runtime.exception_groups import collapse
from runtime.node.agent import identity
from runtime.node.agent.artifact_upload import ArtifactUploader
from runtime.node.agent.connection import AgentConfig, LocalServices, run_agent
from runtime.node.agent.errors import JoinRefused
from runtime.node.agent.executor import ExecutorSettings, NodeExecutor
from runtime.node.agent.jobs import AgentJobs
from runtime.node.agent.planes import PlaneLinks
from runtime.node.packages import InstallOptions, NodeLayout, install
from runtime.node.workers import orphans


@dataclass(frozen=True)
class NodeSettings:
    """How this node joins a control plane.

    `token` (a join token) is needed only until the node has a credential in
    `data_dir/node_credential`, which its first join leaves there. `url` may name several
    planes sharing one state, comma-separated: the node keeps a connection to each.
    """

    url: str
    token: str
    data_dir: Path
    name: str = ""
    agent_version: str = "0"
    executor: ExecutorSettings | None = None
    labels: Mapping[str, str] = field(default_factory=dict)  # `--label KEY=VALUE`, for job selectors


async def run_node(settings: NodeSettings, *, local: LocalServices | None = None,
                   task_status: trio.TaskStatus[Welcome] = trio.TASK_STATUS_IGNORED) -> None:
    """Join the control plane and run what it assigns, until cancelled.

    `task_status.started(welcome)` after the first successful join. `local`: deployments of
    this node's own (`flowctl run DIR`), announced to the plane besides what it assigns.

    Cancellation: every worker is stopped (SIGTERM, then SIGKILL after the grace period).
    Error handling: JoinRefused for a refused token or credential, or for a node that has
    neither; connection trouble is retried.
    """
    layout = await trio.to_thread.run_sync(NodeLayout.create, settings.data_dir)
    await orphans.sweep(layout.root / "run")
    node_id = await trio.to_thread.run_sync(identity.node_identity, settings.data_dir)
    credential = await trio.to_thread.run_sync(identity.read_credential, settings.data_dir)
    if not credential and not settings.token:
        raise JoinRefused(f"node {node_id} has no credential in {settings.data_dir} yet: its first join "
                          "needs a join token (`flowctl node token create NAME` on the control plane)")
    urls = plane_urls(settings.url)
    config = AgentConfig(url=urls[0], token=settings.token, credential=credential, node_id=node_id,
                         name=settings.name or socket.gethostname(), agent_version=settings.agent_version,
                         labels=settings.labels)
    with collapse():
        async with trio.open_nursery() as nursery:
            executor = NodeExecutor(layout, nursery, settings.executor)
            hub = {"url": ""}

            async def install_step(service: str, version: str) -> tuple[Path, str | None]:
                # The package manager the replicas use; not activated, so no service is switched.
                options = InstallOptions(activate=False, allow_downgrade=True)
                report = await install(layout, hub["url"], service, version, options=options)
                return layout.version_dir(service, version), report.venv

            # Step artifacts go to the plane over HTTP with the credential the control link uses.
            upload = ArtifactUploader(urls[0], lambda: identity.read_credential(settings.data_dir) or "")
            jobs = AgentJobs(layout.root / "jobs", install_step, node=node_id,
                             grace_s=(settings.executor or ExecutorSettings()).grace_s, upload=upload)
            await nursery.start(jobs.run)
            agent = partial(run_agent, executor=executor, keep_credential=partial(
                identity.save_credential, settings.data_dir), local=local, jobs=jobs, links=PlaneLinks())
            welcome = await _attach_all(nursery, agent, config, urls, settings.data_dir)
            hub["url"] = welcome.hub_url
            task_status.started(welcome)


def plane_urls(text: str) -> tuple[str, ...]:
    """The plane URLs in `text` (comma-separated), without blanks or repeats, in order.

    Error handling: ValueError when none is given or one is not http(s)://.
    """
    urls = tuple(dict.fromkeys(u.strip().rstrip("/") for u in text.split(",") if u.strip()))
    if not urls:
        raise ValueError("no control plane URL given")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"control plane URL {url!r} is not http:// or https://")
    return urls


async def _attach_all(nursery: trio.Nursery, agent: Callable[..., Awaitable[None]], config: AgentConfig,
                      urls: tuple[str, ...], data_dir: Path) -> Welcome:
    """One agent per plane URL, each reconnecting on its own; the first welcome, once one joined.

    A node that has no credential yet enrolls through the first plane alone (a join token
    enrolls an id once), then attaches to the others with the credential it was given.
    """
    if not config.credential:
        welcome: Welcome = await nursery.start(partial(agent, config))
        credential = await trio.to_thread.run_sync(identity.read_credential, data_dir) or welcome.credential
        for url in urls[1:]:
            nursery.start_soon(partial(agent, replace(config, url=url, credential=credential)))
        return welcome
    first: list[Welcome] = []
    joined = trio.Event()

    async def attach(url: str) -> None:
        first.append(await nursery.start(partial(agent, replace(config, url=url))))
        joined.set()

    for url in urls:
        nursery.start_soon(attach, url)
    await joined.wait()
    return first[0]
