"""`flowctl node token create / ls / revoke`: the join tokens nodes present to the control plane."""

from __future__ import annotations

import typer

from flowctl.commands.cluster import SERVER_HELP, TOKEN_HELP, run_client

token_app = typer.Typer(name="token", help="Create, list and revoke join tokens.", no_args_is_help=True)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'90s', '15m', '12h', '7d' -> seconds."""
    from flowctl.errors import CliError

    raw = text.strip().lower()
    if len(raw) >= 2 and raw[-1] in _UNITS and raw[:-1].isdigit() and int(raw[:-1]) > 0:
        return float(int(raw[:-1]) * _UNITS[raw[-1]])
    raise CliError(f"duration {text!r} is not a positive number with a unit s, m, h or d (e.g. 7d)")


@token_app.command("create")
def create(
    name: str = typer.Argument(..., help="A name for the token (e.g. the node's or the team's)."),
    ttl: str | None = typer.Option(None, "--ttl", help="Expire after this long (e.g. 12h, 7d)."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the token record as JSON."),
) -> None:
    """Create a join token; it is shown once, only its hash is kept.

    A join token enrolls new nodes: at a node's first join the plane binds the node's id
    to the token and issues the node its own credential, used from then on.

    Example: flowctl node token create desk --ttl 7d
    """
    from flowctl.console import err, out, print_json

    seconds = parse_duration(ttl) if ttl else None
    record = run_client(server, token, lambda client: client.create_token(name, ttl_s=seconds))
    if json_out:
        print_json(record)
        return
    err.print(f"join token {record['name']!r} (id {record['token_id']}); shown only this once:")
    out.print(record["token"])
    err.print("Join a node with: flowctl node join URL --token TOKEN (or FLOWCTL_JOIN_TOKEN)")


@token_app.command("ls")
def ls(
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the tokens as JSON."),
) -> None:
    """List join tokens (never their secrets) and the nodes each one enrolled.

    Example: flowctl node token ls --json
    """
    import datetime

    from rich.table import Table

    from flowctl.console import out, print_json

    tokens = run_client(server, token, lambda client: client.tokens())
    if json_out:
        print_json(tokens)
        return
    table = Table()
    for col in ("ID", "NAME", "CREATED", "EXPIRES", "STATE", "NODES"):
        table.add_column(col)

    def when(ts):
        return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M") if ts else "-"

    for t in tokens:
        state = "active" if t["active"] else "revoked" if t["revoked"] else "expired"
        table.add_row(t["token_id"], t["name"], when(t["created_at"]), when(t["expires_at"]), state,
                      ", ".join(t.get("nodes", [])) or "-")
    out.print(table if tokens else "No join tokens.")


@token_app.command("revoke")
def revoke(
    token_ref: str = typer.Argument(..., metavar="ID|NAME", help="The token's id or name."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
) -> None:
    """Revoke a join token and the credentials of the nodes it enrolled.

    Those nodes are disconnected at once and cannot connect again; their replicas are
    placed on other nodes. An expired token, unlike a revoked one, leaves its nodes be.

    Example: flowctl node token revoke desk
    """
    from flowctl.console import out

    run_client(server, token, lambda client: client.revoke_token(token_ref))
    out.print(f"revoked {token_ref}")


def register(app: typer.Typer) -> None:
    """Attach `token` to the `node` group."""
    from flowctl.commands.node import node_app

    node_app.add_typer(token_app, name="token")
