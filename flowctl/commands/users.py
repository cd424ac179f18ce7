"""`flowctl users create/ls/rm/passwd`, `flowctl users token create/ls/revoke`, `flowctl audit ls`.

Passwords are read from a hidden prompt or from stdin (--password-stdin), never from the
command line, so they stay out of shell history and process lists.
"""

from __future__ import annotations

import sys

import typer

from flowctl.commands.cluster import SERVER_HELP

TOKEN_HELP = ("The admin key or a personal access token (fcp_...) [env FLOWCTL_TOKEN; config token].")
ROLE_HELP = "admin, operator, viewer, tenant-admin or tenant-viewer (docs/users.md)."
users_app = typer.Typer(name="users", help="Manage the plane's users, their roles and personal access tokens.",
                        no_args_is_help=True, rich_markup_mode=None)
token_app = typer.Typer(name="token", help="Create, list and revoke a user's personal access tokens.",
                        no_args_is_help=True, rich_markup_mode=None)
audit_app = typer.Typer(name="audit", help="Read the plane's audit log of state changes.", no_args_is_help=True,
                        rich_markup_mode=None)
users_app.add_typer(token_app)


def _run(server: str | None, token: str | None, call):
    from flowctl.commands.cluster import plane_settings
    from runtime.clients.users import UsersClient

    url, key = plane_settings(server, token)
    with UsersClient(url, token=key) as client:
        return call(client)


def _table(rows: list[dict], columns: list[str]) -> None:
    from flowctl.commands.gateway import _table as table

    table(rows, columns)


def read_password(from_stdin: bool, prompt: str = "Password", *, confirm: bool = True) -> str:
    """A password from one line of stdin, or a hidden prompt (typed twice when `confirm`)."""
    from flowctl.errors import CliError

    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise CliError("--password-stdin: stdin ended before a password line")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise CliError("no terminal to ask for the password: pipe it in with --password-stdin")
    return typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm)


@users_app.command("create")
def create(
    name: str = typer.Argument(..., help="User name (a-z 0-9 . _ @ -)."),
    role: str = typer.Option(..., "--role", help=ROLE_HELP),
    tenant: str | None = typer.Option(None, "--tenant", help="The tenant of a tenant-admin or tenant-viewer."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin's first line."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the user as JSON."),
) -> None:
    """Create a user with a role. Example: flowctl users create ana --role tenant-admin --tenant acme"""
    from flowctl.console import echo, print_json

    password = read_password(password_stdin)
    user = _run(server, token, lambda c: c.create_user(name, role, password, tenant))
    print_json(user) if json_out else echo(f"user {user['name']} created ({user['role']}"
                                           + (f" of {user['tenant']})" if user["tenant"] else ")"))


@users_app.command("ls")
def ls(
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List users. Example: flowctl users ls --json"""
    from flowctl.console import print_json

    rows = _run(server, token, lambda c: c.users())
    print_json(rows) if json_out else _table(rows, ["name", "role", "tenant"])


@users_app.command("rm")
def rm(
    name: str = typer.Argument(..., help="User name."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
) -> None:
    """Remove a user; its tokens and sessions stop working at once. Example: flowctl users rm ana"""
    from flowctl.console import echo

    _run(server, token, lambda c: c.delete_user(name))
    echo(f"user {name} removed")


@users_app.command("passwd")
def passwd(
    name: str = typer.Argument(..., help="User name."),
    current: bool = typer.Option(False, "--current", help="Changing your own password with your token: "
                                 "give the current one first (prompt, or stdin's first line)."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password(s) from stdin, a line each."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
) -> None:
    """Set a user's password; its browser sessions end. Example: flowctl users passwd ana"""
    from flowctl.console import echo

    old = read_password(password_stdin, "Current password", confirm=False) if current else None
    password = read_password(password_stdin, "New password")
    _run(server, token, lambda c: c.set_password(name, password, old))
    echo(f"password of {name} changed")


@token_app.command("create")
def token_create(
    user: str = typer.Argument(..., help="The user the token acts as (with that user's role)."),
    name: str = typer.Option("", "--name", help="A label for the token."),
    expires: str | None = typer.Option(None, "--expires", help="Expiry date (YYYY-MM-DD, UTC) or ISO time."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the token record as JSON."),
) -> None:
    """Create a personal access token, shown once. Example: flowctl users token create ana --name laptop"""
    from flowctl.commands.gateway import _parse_date
    from flowctl.console import err, out, print_json

    expires_at = _parse_date(expires) if expires else None
    record = _run(server, token, lambda c: c.create_token(user, name, expires_at))
    if json_out:
        print_json(record)
        return
    err.print(f"token {record['token_id']} of {user}; shown only this once:")
    out.print(record["token"])
    err.print("Use it as FLOWCTL_TOKEN (or --token) or as Authorization: Bearer on the admin APIs")


@token_app.command("ls")
def token_ls(
    user: str = typer.Argument(..., help="User name."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List a user's tokens (never the tokens). Example: flowctl users token ls ana"""
    from flowctl.console import print_json

    rows = _run(server, token, lambda c: c.tokens(user))
    print_json(rows) if json_out else _table(rows, ["token_id", "name", "expires_at", "revoked"])


@token_app.command("revoke")
def token_revoke(
    user: str = typer.Argument(..., help="User name."),
    token_id: str = typer.Argument(..., help="The token's id (users token ls)."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
) -> None:
    """Revoke a token; it stops working at once. Example: flowctl users token revoke ana 0123456789abcdef"""
    from flowctl.console import echo

    _run(server, token, lambda c: c.revoke_token(user, token_id))
    echo(f"token {token_id} of {user} revoked")


@audit_app.command("ls")
def audit_ls(
    since: str | None = typer.Option(None, "--since", help="Only entries newer: a duration (30m, 12h, 7d) "
                                     "or a date/ISO time (UTC)."),
    user: str | None = typer.Option(None, "--user", help="Only this principal's entries (a user, admin, key:ID)."),
    tenant: str | None = typer.Option(None, "--tenant", help="Only entries on this tenant."),
    limit: int = typer.Option(100, "--limit", min=1, max=10_000, help="At most this many, newest first."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the audit log: who changed what, when, from where, and the result. Example: flowctl audit ls --since 1d"""
    import time

    from flowctl.console import print_json

    since_at = _since(since, time.time()) if since else None
    rows = _run(server, token, lambda c: c.audit(since=since_at, user=user, tenant=tenant, limit=limit))
    if json_out:
        print_json(rows)
        return
    shown = [{**r, "time": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["at"]))} for r in rows]
    _table(shown, ["time", "principal", "role", "action", "method", "target", "tenant", "remote", "status"])


def _since(text: str, now: float) -> float:
    from datetime import UTC, datetime

    from flowctl.commands.node_tokens import _UNITS, parse_duration
    from flowctl.errors import CliError

    raw = text.strip()
    if raw[-1:].lower() in _UNITS and raw[:-1].isdigit():
        return now - parse_duration(raw)
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise CliError(f"--since {text!r} is not a duration (30m, 12h, 7d) or a date (YYYY-MM-DD)") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.add_typer(users_app)
    app.add_typer(audit_app)
