"""`flowctl deploy / undeploy / scale / status`: what runs where in a cluster."""

from __future__ import annotations

import typer

SERVER_HELP = ("Control plane URL [env FLOWCTL_SERVER; config server_url; "
               "default http://127.0.0.1:8080].")
TOKEN_HELP = ("The control plane's admin key, or a user's personal access token (fcp_...) "
              "[env FLOWCTL_TOKEN; config token].")
DEFAULT_SERVER = "http://127.0.0.1:8080"
DEFAULT_WAIT_S = 300.0
TRACK_CHOICES = ("stable", "latest", "none")


def plane_settings(server: str | None, token: str | None) -> tuple[str, str | None]:
    """(control plane URL, admin key) from flag > env > config file > default."""
    from flowctl.config import load_config

    cfg = load_config(server_url=server, token=token)
    return cfg.server_url or DEFAULT_SERVER, cfg.token


def run_client(server: str | None, token: str | None, call):
    """Run `call(client)` against the control plane's cluster API."""
    from runtime.clients.cluster import ClusterClient

    url, key = plane_settings(server, token)
    with ClusterClient(url, token=key) as client:
        return call(client)


def _split(ref: str) -> tuple[str, str]:
    service, _, version = ref.partition("@")
    return service, version or "latest"


def deploy(
    ref: str = typer.Argument(..., metavar="SERVICE[@VERSION]", help="What to deploy (default: latest)."),
    replicas: int | None = typer.Option(
        None, "--replicas", "-r", min=0, max=1000,
        help="How many replicas [default: 1 for a new deployment, the current count for an upgrade]."),
    node: list[str] = typer.Option(
        [], "--node", help="Only place on this node (repeatable) [default: a new deployment anywhere, "
        "an upgrade where it was pinned]."),
    any_node: bool = typer.Option(False, "--any-node", help="Remove the deployment's pin: place on any node."),
    track: str | None = typer.Option(
        None, "--track", metavar="stable|latest|none",
        help="Follow a hub channel: publishing (or marking stable) a newer version upgrades the deployment "
        "by itself; 'none' pins it [default: an upgrade keeps its channel, a named @VERSION pins]."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until every replica is ready."),
    timeout: float = typer.Option(DEFAULT_WAIT_S, "--timeout", help="Seconds to wait with --wait."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the deployment as JSON."),
) -> None:
    """Deploy a published service on the cluster's nodes (or upgrade it, replica by replica).

    Example: flowctl deploy llama-chat@1.0.0 --replicas 2; flowctl deploy echo --track stable
    """
    service, version = _split(ref)
    if any_node and node:
        raise typer.BadParameter("give --node or --any-node, not both", param_hint="--any-node")
    if track is not None and track not in TRACK_CHOICES:
        raise typer.BadParameter(f"{track!r} is not one of: {', '.join(TRACK_CHOICES)}", param_hint="--track")
    if track not in (None, "none") and version != "latest":
        raise typer.BadParameter(f"give @{version} or --track {track}, not both: a tracked deployment runs "
                                 "its channel's newest version", param_hint="--track")
    nodes: list[str] | None = [] if any_node else node or None  # None: keep the current pin

    def call(client):
        dep = client.deploy(service, version, replicas=replicas, nodes=nodes,
                            track=None if track is None else "" if track == "none" else track)
        if wait:
            dep["status"] = _wait_ready(client, service, dep["version"], dep["replicas"], timeout, quiet=json_out)
        return dep

    dep = run_client(server, token, call)
    _print_deployment(dep, json_out)


def _wait_ready(client, service: str, version: str, desired: int, limit_s: float, *, quiet: bool):
    import time

    from flowctl.console import err
    from flowctl.errors import CliError

    last = None
    deadline = time.monotonic() + limit_s
    while True:
        status = client.status()
        dep = next((d for d in status["deployments"] if d["service"] == service), None)
        if dep is None:
            raise CliError(f"deployment {service!r} disappeared while waiting")
        line = f"{service}@{version}: {dep['ready']}/{desired} ready"
        if dep.get("unplaced"):
            line += f" ({dep['unplaced']})"
        failed = [r for r in dep["replicas"] if r["state"] == "failed" and r["version"] == version]
        if failed and failed[0].get("detail"):
            line += f" (replica {failed[0]['replica_id']}: {failed[0]['detail']})"
        if line != last and not quiet:
            err.print(line)
            last = line
        if dep["ready"] >= desired and all(r["version"] == version for r in dep["replicas"]):
            return dep
        if time.monotonic() >= deadline:
            raise CliError(f"{service}@{version} was not ready after {limit_s:.0f} s: {last}")
        time.sleep(0.5)


def _print_deployment(dep: dict, json_out: bool) -> None:
    from flowctl.console import out, print_json

    if json_out:
        print_json(dep)
        return
    nodes = f" on {', '.join(dep['nodes'])}" if dep.get("nodes") else ""
    track = f" (follows {dep['track']})" if dep.get("track") else ""
    out.print(f"{dep['service']}@{dep['version']}{track}: {dep['replicas']} replica(s){nodes}; "
              f"models: {', '.join(dep['models']) or '-'}")


def undeploy(
    service: str = typer.Argument(..., help="The deployed service."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
) -> None:
    """Stop every replica of a service and remove its deployment.

    Example: flowctl undeploy llama-chat
    """
    from flowctl.console import out

    run_client(server, token, lambda client: client.undeploy(service))
    out.print(f"undeployed {service}")


def scale(
    service: str = typer.Argument(..., help="The deployed service."),
    replicas: int = typer.Argument(..., min=0, max=1000, help="The new replica count."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the deployment as JSON."),
) -> None:
    """Change how many replicas of a deployed service run.

    Example: flowctl scale llama-chat 3
    """
    dep = run_client(server, token, lambda client: client.scale(service, replicas))
    _print_deployment(dep, json_out)


def status(
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print {nodes, deployments, models} as JSON."),
) -> None:
    """Show nodes (state, load, last heartbeat), deployments (desired vs ready) and models.

    Example: flowctl status --json
    """
    from flowctl.commands.status_view import render_status
    from flowctl.console import print_json

    data = run_client(server, token, lambda client: client.status())
    if json_out:
        print_json(data)
    else:
        render_status(data)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("deploy")(deploy)
    app.command("undeploy")(undeploy)
    app.command("scale")(scale)
    app.command("status")(status)
