"""`flowctl node join URL --token TOKEN`: make this machine a node of a control plane."""

from __future__ import annotations

from pathlib import Path

import typer

LABEL_HELP = ("A label of this node, KEY=VALUE (repeat for several), matched by job step selectors "
              "[env FLOWCTL_NODE_LABELS: KEY=VALUE,KEY=VALUE].")
JOIN_TOKEN_HELP = ("Join token from `flowctl node token create` [env FLOWCTL_JOIN_TOKEN]; needed only for "
                   "a node's first join (then it connects with the credential kept in DATA_DIR/node).")


def join(
    url: list[str] = typer.Argument(None, metavar="URL...", help="The control plane, e.g. http://plane.example:8080; several "
                                                 "planes sharing one state: repeat, or separate with commas "
                                                 "(the node keeps a connection to each) [config server_url]."),
    plane: list[str] = typer.Option([], "--plane", metavar="URL",
                                    help="Another control plane of the same cluster (repeat for several)."),
    token: str | None = typer.Option(None, "--token", envvar="FLOWCTL_JOIN_TOKEN", help=JOIN_TOKEN_HELP,
                                     show_envvar=False),
    name: str | None = typer.Option(None, "--name", help="This node's name (default: the hostname)."),
    data_dir: Path | None = typer.Option(None, "--data-dir",
                                         help="State directory; the node keeps DATA_DIR/node "
                                              "[env FLOWCTL_DATA_DIR; config data_dir]."),
    label: list[str] = typer.Option([], "--label", metavar="KEY=VALUE", help=LABEL_HELP),
) -> None:
    """Join a control plane and run the services it assigns here, until stopped.

    The node dials out over one WebSocket (so it works behind NAT), reconnects with
    backoff when the connection drops, and stops its workers cleanly on Ctrl-C. Its
    first join enrolls its id with the join token; the plane then issues it a credential
    (kept in DATA_DIR/node/node_credential, 0600) that it connects with from then on.

    With several planes sharing one state (docs/scale-out.md) the node attaches to every one,
    each connection reconnecting on its own: any plane routes requests to it, and losing a
    plane costs the node that one link.

    Example: flowctl node join http://plane.example:8080 --token fjt_... --label gpu=a100

    Example: flowctl node join http://p1:8080,http://p2:8080 --plane http://p3:8080
    """
    from flowctl.errors import CliError

    urls = join_urls([*(url or []), *plane], data_dir)
    labels = parse_labels(label)
    if not token and not node_has_credential(data_dir):
        raise CliError("a join token is required for a node's first join: --token or FLOWCTL_JOIN_TOKEN "
                       "(create one on the control plane with `flowctl node token create NAME`)")
    run_node_until_stopped(urls, token or "", name=name, data_dir=data_dir, labels=labels)


def join_urls(given: list[str], data_dir: Path | None) -> str:
    """The plane URLs to join, comma-separated: those given, else the config's server_url.

    Error handling: typer.BadParameter naming a URL that is not http(s):// or none at all.
    """
    from flowctl.config import load_config
    from runtime.node.agent.serve import plane_urls

    text = ",".join(given) or (load_config(data_dir=data_dir).server_url or "")
    try:
        return ",".join(plane_urls(text))
    except ValueError as exc:
        raise typer.BadParameter(f"{exc} (e.g. http://plane.example:8080)", param_hint="URL") from None


def parse_labels(values: list[str]) -> dict[str, str]:
    """`--label KEY=VALUE` options (or FLOWCTL_NODE_LABELS when none are given) as a dict."""
    import os
    import re

    from runtime.control.messages import LABEL_KEY, LABEL_VALUE, MAX_LABELS, RESERVED_LABELS

    if not values:
        values = [v.strip() for v in os.environ.get("FLOWCTL_NODE_LABELS", "").split(",") if v.strip()]
    labels: dict[str, str] = {}
    for item in values:
        key, eq, value = item.partition("=")
        if not eq:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--label")
        if not re.match(LABEL_KEY, key):
            raise typer.BadParameter(f"label key {key!r}: 1-63 letters, digits, '.', '_', '-' or '/', "
                                     "starting and ending with a letter or digit", param_hint="--label")
        if key in RESERVED_LABELS:
            raise typer.BadParameter(f"label key {key!r} is reserved: selectors use it for the node's own "
                                     "name and id", param_hint="--label")
        if not re.match(LABEL_VALUE, value):
            raise typer.BadParameter(f"label {key}={value!r}: the value is up to 63 letters, digits, '.', '_' "
                                     "or '-', starting and ending with a letter or digit", param_hint="--label")
        if key in labels and labels[key] != value:
            raise typer.BadParameter(f"label {key!r} given twice ({labels[key]!r} and {value!r})",
                                     param_hint="--label")
        labels[key] = value
    if len(labels) > MAX_LABELS:
        raise typer.BadParameter(f"{len(labels)} labels: at most {MAX_LABELS}", param_hint="--label")
    return labels


def node_has_credential(data_dir: Path | None) -> bool:
    """Whether this machine's node joined before (it then connects with its credential, no token)."""
    from flowctl.config import load_config
    from runtime.node.agent import read_credential

    return bool(read_credential(Path(load_config(data_dir=data_dir).data_dir) / "node"))


def run_node_until_stopped(url: str, token: str, *, name: str | None, data_dir: Path | None,
                           labels: dict[str, str] | None = None) -> None:
    """Run a node in the foreground, printing what it joined."""
    from functools import partial

    from flowctl import __version__
    from flowctl.config import load_config
    from flowctl.console import err
    from flowctl.lifecycle import run_until_signal
    from runtime.node.agent import ExecutorSettings, NodeSettings, run_node

    cfg = load_config(data_dir=data_dir)
    settings = NodeSettings(url=url, token=token, data_dir=Path(cfg.data_dir) / "node", name=name or "",
                            agent_version=__version__, labels=labels or {},
                            executor=ExecutorSettings(worker_env_passthrough=cfg.worker_env_passthrough))

    async def main(nursery) -> None:
        welcome = await nursery.start(partial(run_node, settings))
        err.print(f"joined cluster {welcome.cluster_id} at {url} as node {welcome.node_id} (Ctrl-C to leave)")

    run_until_signal(main)


def register(app: typer.Typer) -> None:
    """Attach `join` to the `node` group."""
    from flowctl.commands.node import node_app

    node_app.command("join")(join)
