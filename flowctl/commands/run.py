"""`flowctl run DIR`: a service directory as this node's own deployment, restarted on edits.

Seed 003's worker that brings its own models: the directory (a service.json and its code,
unpublished) runs as a worker on this machine, registered with a control plane as a
deployment owned by this node, so the gateway routes its models here. Against a running
plane (`--server URL --token T`) or, without --server, an embedded plane on 127.0.0.1
(as `flowctl up` starts). See docs/run.md.
"""

from __future__ import annotations

from pathlib import Path

import typer

from flowctl.commands.up import ANONYMOUS_TENANT_HELP

NAME_MAX = 64


def run(
    directory: Path = typer.Argument(..., help="The service directory: a service.json and its files "
                                               "(e.g. examples/echo)."),
    server: str | None = typer.Option(None, "--server",
                                      help="A running control plane to register with, e.g. "
                                           "http://plane.example:8080 (default: start one on 127.0.0.1)."),
    token: str | None = typer.Option(None, "--token", envvar="FLOWCTL_JOIN_TOKEN", show_envvar=False,
                                     help="Join token from `flowctl node token create` on that plane [env "
                                          "FLOWCTL_JOIN_TOKEN]; needed only for DIR's first join there "
                                          "(then its node connects with the credential kept in DATA_DIR/run)."),
    name: str | None = typer.Option(None, "--name",
                                    help="This node's name (default: HOSTNAME-DIRNAME with --server, "
                                         "the hostname without)."),
    data_dir: Path | None = typer.Option(None, "--data-dir",
                                         help="State directory [env FLOWCTL_DATA_DIR; config data_dir]."),
    port: int = typer.Option(8080, "--port", min=0, max=65535,
                             help="Without --server: the embedded control plane's port (0: any free one)."),
    poll_interval: float = typer.Option(0.5, "--poll-interval", min=0.05, max=60,
                                        help="Seconds between checks of DIR's files for changes."),
    python: Path | None = typer.Option(None, "--python",
                                       help="The Python that runs `python ...` startup commands "
                                            "(default: flowctl's own)."),
    anonymous_tenant: str | None = typer.Option(None, "--anonymous-tenant",
                                                help="Without --server: " + ANONYMOUS_TENANT_HELP),
) -> None:
    """Run a service directory as a worker here, registered with a control plane; restart it on edits.

    The directory's models are served through the plane's gateway while this runs: it is
    a deployment owned by this node, never placed elsewhere, and gone from the plane when
    this stops (Ctrl-C, SIGTERM, or the process killed: the plane drops it when the node's
    connection ends). Saving a file restarts the worker; a broken edit prints the error
    and the next good one brings it back. A model id the plane already serves is refused.

    Example: flowctl run examples/echo --server http://plane.example:8080 --token fjt_...
    """
    from flowctl.errors import CliError
    from runtime.node.agent.local_service import read_manifest

    directory = Path(directory)
    if not directory.is_dir():
        raise CliError(f"{str(directory)!r} is not a directory (flowctl run needs a service directory)")
    manifest = read_manifest(directory)  # a clear error now, before anything starts
    if token and not server:
        raise CliError("--token joins a running plane: give its URL with --server too")
    if server and not server.startswith(("http://", "https://")):
        raise CliError(f"--server {server!r} is not an http:// or https:// URL (e.g. http://plane.example:8080)")
    if anonymous_tenant and server:
        raise CliError("--anonymous-tenant sets up the embedded plane: the plane at --server has its own settings")
    if python is not None and not python.is_file():
        raise CliError(f"--python {str(python)!r} is not a file")
    if server:
        _run_joined(directory, server, token or "", name=name, data_dir=data_dir, poll_interval=poll_interval,
                    python=python)
    else:
        _run_standalone(directory, manifest.service_id, port=port, name=name, data_dir=data_dir,
                        poll_interval=poll_interval, python=python, anonymous_tenant=anonymous_tenant)


def node_dir(root: Path, directory: Path) -> Path:
    """The identity and state of the node that runs `directory` against a plane: one per directory,
    so it never takes over this machine's `flowctl node join` node, nor another directory's."""
    import hashlib

    resolved = str(directory.resolve())
    return root / "run" / f"{_safe(directory.resolve().name)[:40]}-{hashlib.sha256(resolved.encode()).hexdigest()[:8]}"


def _safe(text: str) -> str:
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "-" for c in text).strip("-._")
    return cleaned or "service"


def _settings(poll_interval: float, python: Path | None, passthrough: tuple[str, ...]):
    from dataclasses import replace

    from runtime.node.agent.local_service import RunSettings

    settings = RunSettings(poll_interval_s=poll_interval, passthrough=passthrough)
    return settings if python is None else replace(settings, python=python.resolve())


def _say(line: str) -> None:
    from flowctl.console import err, printable

    err.out(printable(line), highlight=False)


async def _serve_directory(nursery, node_settings, directory: Path, run_settings, url: str) -> None:
    """Join with the directory as this node's own deployment; return only to fail (refused)."""
    from functools import partial

    from flowctl.errors import CliError
    from runtime.node.agent import run_node
    from runtime.node.agent.local_service import DirectoryService

    service = DirectoryService(directory, node_settings.data_dir / "local", run_settings, say=_say)
    welcome = await nursery.start(partial(run_node, node_settings, local=service))
    _say(f"joined cluster {welcome.cluster_id} at {url} as node {node_settings.name}")
    await nursery.start(service.run)
    _say(f"gateway: {url}/v1   (Ctrl-C to stop; edits to {directory} restart the worker)")
    await service.refused.wait()
    raise CliError(service.refusal)


def _run_joined(directory: Path, server: str, token: str, *, name: str | None, data_dir: Path | None,
                poll_interval: float, python: Path | None) -> None:
    import socket

    from flowctl import __version__
    from flowctl.config import load_config
    from flowctl.errors import CliError
    from flowctl.lifecycle import run_until_signal
    from runtime.node.agent import ExecutorSettings, NodeSettings, read_credential

    cfg = load_config(data_dir=data_dir)
    state = node_dir(Path(cfg.data_dir), directory)
    if not token and not read_credential(state):
        raise CliError(f"a join token is required the first time {directory} joins {server}: --token or "
                       "FLOWCTL_JOIN_TOKEN (create one there with `flowctl node token create NAME`)")
    node_name = name or f"{socket.gethostname()}-{_safe(directory.resolve().name)}"[:NAME_MAX]
    settings = NodeSettings(url=server, token=token, data_dir=state, name=node_name, agent_version=__version__,
                            executor=ExecutorSettings(worker_env_passthrough=cfg.worker_env_passthrough))
    run_settings = _settings(poll_interval, python, cfg.worker_env_passthrough)

    async def main(nursery) -> None:
        await _serve_directory(nursery, settings, directory, run_settings, server.rstrip("/"))

    run_until_signal(main)


def _run_standalone(directory: Path, service_id: str, *, port: int, name: str | None, data_dir: Path | None,
                    poll_interval: float, python: Path | None, anonymous_tenant: str | None) -> None:
    import os
    import socket
    from functools import partial

    import trio

    from flowctl import __version__
    from flowctl.commands.up import LOCAL_ENROLL_TTL_S, _probe, gateway_settings, session_settings
    from flowctl.config import load_config
    from flowctl.console import err
    from flowctl.console import out as stdout
    from flowctl.errors import CliError
    from flowctl.lifecycle import run_until_signal
    from runtime.node.agent import ExecutorSettings, NodeSettings, read_credential
    from runtime.plane import PlaneSettings, serve_control_plane

    host = "127.0.0.1"
    holder = _probe(host, port) if port else None
    if holder is not None:
        hint = (f"; to run {service_id} on that plane: flowctl run {directory} --server http://{host}:{port} "
                "--token $(flowctl node token create NAME)" if holder.get("kind") == "flowctl-control-plane"
                else f" ({holder.get('what', 'unknown')})")
        raise CliError(f"port {port} on {host} is in use{hint}; or choose another --port")
    cfg = load_config(data_dir=data_dir, anonymous_tenant=anonymous_tenant)
    root = Path(cfg.data_dir)
    plane = PlaneSettings(data_dir=root, host=host, port=port, version=__version__,
                          extra={"sessions": session_settings(cfg), "gateway": gateway_settings(cfg)})
    run_settings = _settings(poll_interval, python, cfg.worker_env_passthrough)

    def new_key(key: str) -> None:
        err.print("[bold]A new admin key was generated; it is shown only this once:[/bold]")
        stdout.print(key)
        err.print("Use it with --token or FLOWCTL_TOKEN for publish, deploy, status and node token.")

    async def main(nursery) -> None:
        handle = await nursery.start(partial(serve_control_plane, plane,
                                             admin_key=os.environ.get("FLOWCTL_ADMIN_KEY"),
                                             metrics_token=os.environ.get("FLOWCTL_METRICS_TOKEN"),
                                             on_new_key=new_key))
        _say(f"control plane (hub + scheduler + gateway) on {handle.url}, data in {root}")
        node_name = name or socket.gethostname()
        token = ""
        if not await trio.to_thread.run_sync(read_credential, root / "node"):
            _, token = await trio.to_thread.run_sync(partial(
                handle.scheduler.store.create_token, f"local-{node_name}", ttl_s=LOCAL_ENROLL_TTL_S))
        settings = NodeSettings(url=handle.url, token=token, data_dir=root / "node", name=node_name,
                                agent_version=__version__,
                                executor=ExecutorSettings(worker_env_passthrough=cfg.worker_env_passthrough))
        if not cfg.anonymous_tenant:
            _say("API keys for the gateway: FLOWCTL_TOKEN=ADMIN_KEY flowctl keys create --tenant dev "
                 "(or run with --anonymous-tenant dev)")
        await _serve_directory(nursery, settings, directory, run_settings, handle.url)

    run_until_signal(main)


def register(app: typer.Typer) -> None:
    """Attach `run` to the root app."""
    app.command("run")(run)
