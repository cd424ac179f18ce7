"""`flowctl up`: one command for a cluster (seed 003's auto-detected master or worker).

If the port is free, start a control plane (hub + scheduler + gateway) there plus a local
node. If a flowctl control plane already holds it, join that plane as a node
(with a join token, never silently). If anything else holds it, refuse.
"""

from __future__ import annotations

from pathlib import Path

import typer

from flowctl.commands import plane_options as opt
from flowctl.commands.join import JOIN_TOKEN_HELP, LABEL_HELP

HANDSHAKE_TIMEOUT_S = 3.0
LOCAL_ENROLL_TTL_S = 600  # the local node's first join only; its credential outlives the token
# The gateway's settings shared with `flowctl serve` (which prefixes "With the gateway role: ").
DEFAULT_MODEL_HELP = ("the model of a session whose create body names none, as seed 002's does "
                      "[env FLOWCTL_DEFAULT_MODEL; config default_model].")
ANONYMOUS_TENANT_HELP = ("serve requests without an API key as this tenant, with its limits (created "
                         "if missing); off by default [env FLOWCTL_ANONYMOUS_TENANT; config anonymous_tenant].")


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def up(
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="The control plane's port."),
    host: str = typer.Option("127.0.0.1", "--host",
                             help="Where to listen, or the plane to join (0.0.0.0 lets other machines join)."),
    token: str | None = typer.Option(None, "--token", envvar="FLOWCTL_JOIN_TOKEN", show_envvar=False,
                                     help=JOIN_TOKEN_HELP + " Needed only to join an existing plane."),
    name: str | None = typer.Option(None, "--name", help="This node's name (default: the hostname)."),
    label: list[str] = typer.Option([], "--label", metavar="KEY=VALUE", help=LABEL_HELP),
    data_dir: Path | None = typer.Option(None, "--data-dir",
                                         help="State directory [env FLOWCTL_DATA_DIR; config data_dir]."),
    local_node: bool = typer.Option(True, "--node/--no-node",
                                    help="With a new control plane, also run a node in this process."),
    default_model: str | None = typer.Option(None, "--default-model", help=_sentence(DEFAULT_MODEL_HELP)),
    anonymous_tenant: str | None = typer.Option(None, "--anonymous-tenant",
                                                help=_sentence(ANONYMOUS_TENANT_HELP)),
    max_sessions: int | None = opt.max_sessions_option(),
    session_timeout: float | None = opt.session_timeout_option(),
    public_ws_url: str | None = opt.public_ws_url_option(),
    trusted_proxy: list[str] = opt.trusted_proxy_option(),
    first_byte_timeout: float | None = opt.first_byte_timeout_option(),
    reply_idle_timeout: float | None = opt.reply_idle_timeout_option(),
    body_timeout: float | None = opt.body_timeout_option(),
    heartbeat_interval: float | None = opt.heartbeat_interval_option(),
    lost_after: float | None = opt.lost_after_option(),
    blobs: str | None = opt.blobs_option(),
    blob_url_ttl: float | None = opt.blob_url_ttl_option(),
    plane_name: str | None = opt.plane_name_option(),
    leader_ttl: float | None = opt.leader_ttl_option(),
    redis: str | None = opt.redis_option(),
    tutors: Path | None = opt.tutors_option(),
    state: str | None = opt.state_option(),
) -> None:
    """Start a control plane with a local node, or join the one already on --port.

    Example: flowctl up --port 8080   (then, on a second terminal or machine:
    flowctl up --port 8080 --token $(flowctl node token create second))
    """
    from flowctl.commands.join import parse_labels
    from flowctl.config import load_config
    from flowctl.errors import CliError

    labels = parse_labels(label)
    holder = _probe(host, port)
    if holder is None:
        # Resolved (and checked) before anything starts: a bad value is one line, nothing half-started.
        cfg = load_config(data_dir=data_dir, state=state, default_model=default_model, anonymous_tenant=anonymous_tenant,
                          blobs=blobs, blob_url_ttl=blob_url_ttl,
                          max_sessions=max_sessions, session_timeout=session_timeout, public_ws_url=public_ws_url,
                          trusted_proxies=trusted_proxy or None, first_byte_timeout=first_byte_timeout,
                          reply_idle_timeout=reply_idle_timeout, body_timeout=body_timeout,
                          heartbeat_interval=heartbeat_interval, lost_after=lost_after, tutors=tutors,
                          plane_name=plane_name, leader_ttl=leader_ttl, redis=redis)
        _start_plane(host, port, cfg, name=name, local_node=local_node, labels=labels)
    elif holder.get("kind") == "flowctl-control-plane":
        from flowctl.commands.join import node_has_credential, run_node_until_stopped

        if not token and not node_has_credential(data_dir):
            raise CliError(f"port {port} is held by a flowctl control plane (cluster {holder['cluster_id']}); "
                           "to join it as a node pass --token (or FLOWCTL_JOIN_TOKEN), created there with "
                           "`flowctl node token create NAME`")
        run_node_until_stopped(f"http://{_connect_host(host)}:{port}", token or "", name=name,
                               data_dir=Path(data_dir) if data_dir else None, labels=labels)
    else:
        raise CliError(f"port {port} on {host} is in use by something that is not a flowctl control plane "
                       f"({holder.get('what', 'unknown')}); choose another --port")


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _probe(host: str, port: int) -> dict | None:
    """None if the port is free; the handshake if a control plane holds it; else {'what': ...}."""
    import socket

    import httpx

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            return None
        except OSError:
            pass
    try:
        response = httpx.get(f"http://{_connect_host(host)}:{port}/api/cluster/handshake",
                             timeout=HANDSHAKE_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return {"what": f"no HTTP answer: {type(exc).__name__}"}
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code == 200 and isinstance(data, dict) and "cluster_id" in data:
        return data
    return {"what": f"HTTP {response.status_code} on /api/cluster/handshake"}


def _start_plane(host: str, port: int, cfg, *, name: str | None, local_node: bool,
                 labels: dict[str, str]) -> None:
    import os
    import socket
    from functools import partial

    import trio

    from flowctl import __version__
    from flowctl.console import err
    from flowctl.console import out as stdout
    from flowctl.lifecycle import run_until_signal
    from runtime.hub import HubSettings
    from runtime.node.agent import ExecutorSettings, NodeSettings, read_credential
    from runtime.plane import PlaneSettings, serve_control_plane

    root = Path(cfg.data_dir)
    opt.check_state(cfg)
    executor = ExecutorSettings(worker_env_passthrough=cfg.worker_env_passthrough)
    plane = PlaneSettings(data_dir=root, state=cfg.state, host=host, port=port, version=__version__, **scheduler_settings(cfg),
                          hub=HubSettings(data_dir=root, **opt.blob_settings(cfg)),
                          extra={"sessions": session_settings(cfg), "gateway": gateway_settings(cfg),
                                 **leader_settings(cfg)})

    def new_key(key: str) -> None:
        err.print("[bold]A new admin key was generated; it is shown only this once:[/bold]")
        stdout.print(key)
        err.print("Use it with --token or FLOWCTL_TOKEN for publish, deploy, status and node token.")
        err.print("Lost it? Restart with FLOWCTL_ADMIN_KEY=NEW_SECRET set: that becomes the admin key.")

    async def main(nursery) -> None:
        handle = await nursery.start(partial(serve_control_plane, plane,
                                             admin_key=os.environ.get("FLOWCTL_ADMIN_KEY"),
                                             metrics_token=os.environ.get("FLOWCTL_METRICS_TOKEN"),
                                             on_new_key=new_key))
        err.print(f"control plane (hub + scheduler + gateway) on {handle.url}, data in {root}")
        if local_node:
            node_name = name or socket.gethostname()
            token = ""
            if not await trio.to_thread.run_sync(read_credential, root / "node"):
                # Its first start: a short-lived token enrolls it; later starts use its credential.
                _, token = await trio.to_thread.run_sync(partial(
                    handle.scheduler.store.create_token, f"local-{node_name}", ttl_s=LOCAL_ENROLL_TTL_S))
            settings = NodeSettings(url=handle.url, token=token, data_dir=root / "node", name=node_name,
                                    agent_version=__version__, executor=executor, labels=labels)
            welcome = await nursery.start(partial(_serve_local_node, settings))
            if welcome is not None:
                err.print(f"local node {node_name} joined cluster {welcome.cluster_id}")
        err.print("Other nodes join with: flowctl up --port PORT --host THIS_HOST --token "
                  "$(flowctl node token create NAME)   (Ctrl-C to stop)")

    run_until_signal(main)


def session_settings(cfg) -> dict:
    """The plane's session settings (PlaneSettings.extra["sessions"]) from the resolved config."""
    chosen = {"default_model": cfg.default_model, "max_sessions": cfg.max_sessions,
              "idle_timeout": cfg.session_timeout, "public_ws_url": cfg.public_ws_url,
              "trusted_proxies": cfg.trusted_proxies, "tutors": cfg.tutors}
    return {k: v for k, v in chosen.items() if v}


def gateway_settings(cfg) -> dict:
    """The plane's gateway settings (PlaneSettings.extra["gateway"]) from the resolved config."""
    chosen = {"anonymous_tenant": cfg.anonymous_tenant, "first_byte_timeout": cfg.first_byte_timeout,
              "idle_timeout": cfg.reply_idle_timeout, "body_timeout": cfg.body_timeout, "redis": cfg.redis}
    return {k: v for k, v in chosen.items() if v is not None}


def leader_settings(cfg) -> dict:
    """PlaneSettings.extra's "leader" (several planes on one state) when a plane name is set, else {}."""
    if not cfg.plane_name:
        return {}
    leader: dict = {"name": cfg.plane_name}
    if cfg.leader_ttl:
        leader["ttl_s"] = cfg.leader_ttl
    return {"leader": leader}


def scheduler_settings(cfg) -> dict:
    """The plane's node timings (PlaneSettings keywords) from the resolved config; unset: the defaults.

    Error handling: CliError when a node would be lost between two of its own heartbeats.
    """
    from flowctl.errors import CliError
    from runtime.scheduler.registry import DEFAULT_LOST_AFTER
    from runtime.scheduler.service import DEFAULT_HEARTBEAT_INTERVAL

    chosen = {"heartbeat_interval": cfg.heartbeat_interval, "lost_after": cfg.lost_after}
    interval = cfg.heartbeat_interval or DEFAULT_HEARTBEAT_INTERVAL
    lost_after = cfg.lost_after or DEFAULT_LOST_AFTER
    if lost_after <= interval:
        raise CliError(f"lost_after ({lost_after:g} s) must be longer than heartbeat_interval ({interval:g} s), "
                       "or every node is lost between two heartbeats")
    return {k: v for k, v in chosen.items() if v is not None}


async def _serve_local_node(settings, *, task_status) -> None:
    """Run the plane's own node; if the plane refuses it (its token revoked), only the node ends.

    `task_status.started(welcome)` once it joined, or `started(None)` if it was refused first.
    """
    import trio

    from flowctl.console import err
    from runtime.node.agent import JoinRefused, run_node

    joined = False
    try:
        async with trio.open_nursery() as nursery:
            welcome = await nursery.start(run_node, settings)
            joined = True
            task_status.started(welcome)
    except* JoinRefused as group:
        err.print(f"local node stopped: {group.exceptions[0]}")
        if not joined:
            task_status.started(None)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("up")(up)
