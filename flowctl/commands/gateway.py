"""`flowctl tenants create/update/ls/rm`, `flowctl keys create/ls/revoke`, `flowctl usage`: the gateway's keys."""

from __future__ import annotations

import typer

from flowctl.commands.cluster import SERVER_HELP, TOKEN_HELP

MAX_SESSIONS_HELP = "Realtime sessions the tenant may have open at once (0: none)."
tenants_app = typer.Typer(name="tenants", help="Manage the gateway's tenants.", no_args_is_help=True,
                          rich_markup_mode=None)


def _run(server: str | None, token: str | None, call):
    from flowctl.commands.cluster import plane_settings
    from runtime.clients.gateway import GatewayAdminClient

    url, key = plane_settings(server, token)
    with GatewayAdminClient(url, token=key) as client:
        return call(client)


def _table(rows: list[dict], columns: list[str]) -> None:
    from flowctl.console import echo

    widths = {c: max([len(c), *(len(str(r.get(c, ""))) for r in rows)]) for c in columns}
    echo("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for r in rows:
        echo("  ".join(str("" if r.get(c) is None else r.get(c)).ljust(widths[c]) for c in columns))


@tenants_app.command("create")
def tenants_create(
    name: str = typer.Argument(..., help="Tenant name (a-z 0-9 . _ -)."),
    rpm: int | None = typer.Option(None, "--rpm", min=1, help="Tenant-wide requests per minute."),
    tpm: int | None = typer.Option(None, "--tpm", min=1, help="Tenant-wide tokens per minute."),
    max_concurrency: int | None = typer.Option(None, "--max-concurrency", min=1, help="Tenant-wide concurrent requests."),
    max_sessions: int | None = typer.Option(None, "--max-sessions", min=0, help=MAX_SESSIONS_HELP),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the tenant as JSON."),
) -> None:
    """Create a tenant. Example: flowctl tenants create acme --rpm 600 --max-sessions 50"""
    from flowctl.console import echo, print_json

    limits = {"rpm": rpm, "tpm": tpm, "max_concurrency": max_concurrency, "max_sessions": max_sessions}
    tenant = _run(server, token, lambda c: c.create_tenant(name, **limits))
    print_json(tenant) if json_out else echo(f"tenant {tenant['name']} created")


@tenants_app.command("update")
def tenants_update(
    name: str = typer.Argument(..., help="Tenant name."),
    rpm: int | None = typer.Option(None, "--rpm", min=1, help="Tenant-wide requests per minute."),
    tpm: int | None = typer.Option(None, "--tpm", min=1, help="Tenant-wide tokens per minute."),
    max_concurrency: int | None = typer.Option(None, "--max-concurrency", min=1, help="Tenant-wide concurrent requests."),
    max_sessions: int | None = typer.Option(None, "--max-sessions", min=0, help=MAX_SESSIONS_HELP),
    unset: list[str] = typer.Option([], "--unset", help="Make a limit unlimited again: rpm, tpm, max-concurrency "
                                    "or max-sessions (repeatable)."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the tenant as JSON."),
) -> None:
    """Change a tenant's limits; they apply at once. Example: flowctl tenants update acme --max-sessions 20"""
    from flowctl.console import echo, print_json

    given = {"rpm": rpm, "tpm": tpm, "max_concurrency": max_concurrency, "max_sessions": max_sessions}
    changes: dict[str, int | None] = {field: value for field, value in given.items() if value is not None}
    for option in unset:
        field = option.replace("-", "_")
        if field not in given:
            raise typer.BadParameter(f"{option!r} is not one of rpm, tpm, max-concurrency, max-sessions",
                                     param_hint="--unset")
        if field in changes:
            raise typer.BadParameter(f"{option!r} is both set and unset", param_hint="--unset")
        changes[field] = None
    if not changes:
        raise typer.BadParameter("give a limit to change (--rpm, --tpm, --max-concurrency, --max-sessions, --unset)")
    tenant = _run(server, token, lambda c: c.update_tenant(name, **changes))
    if json_out:
        print_json(tenant)
        return
    shown = ", ".join(f"{field} {'unlimited' if tenant[field] is None else tenant[field]}" for field in changes)
    echo(f"tenant {tenant['name']} updated: {shown}")


@tenants_app.command("ls")
def tenants_ls(
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List tenants. Example: flowctl tenants ls"""
    from flowctl.console import print_json

    rows = _run(server, token, lambda c: c.tenants())
    print_json(rows) if json_out else _table(rows, ["name", "keys", "rpm", "tpm", "max_concurrency", "max_sessions"])


@tenants_app.command("rm")
def tenants_rm(
    name: str = typer.Argument(..., help="Tenant name."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
) -> None:
    """Remove a tenant and revoke its keys. Example: flowctl tenants rm acme"""
    from flowctl.console import echo

    _run(server, token, lambda c: c.delete_tenant(name))
    echo(f"tenant {name} removed")


def keys_create(
    tenant: str = typer.Option(..., "--tenant", help="The tenant the key belongs to."),
    name: str = typer.Option("", "--name", help="A label for the key."),
    rpm: int | None = typer.Option(None, "--rpm", min=1, help="Requests per minute."),
    tpm: int | None = typer.Option(None, "--tpm", min=1, help="Tokens per minute."),
    max_concurrency: int | None = typer.Option(None, "--max-concurrency", min=1, help="Concurrent requests."),
    models: str = typer.Option("", "--models", help="Allowed models, comma-separated patterns (e.g. 'llama-*,echo')."),
    expires: str | None = typer.Option(None, "--expires", help="Expiry date (YYYY-MM-DD, UTC) or ISO time."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON (with the key)."),
) -> None:
    """Create an API key; it is printed once (alone on stdout) and never again.

    Example: KEY=$(flowctl keys create --tenant acme --rpm 60 --models 'echo,llama-*')
    """
    from flowctl.console import echo, err, print_json

    options = {"name": name, "rpm": rpm, "tpm": tpm, "max_concurrency": max_concurrency,
               "models": [m.strip() for m in models.split(",") if m.strip()],
               "expires_at": _parse_date(expires) if expires else None}
    created = _run(server, token, lambda c: c.create_key(tenant, **options))
    if json_out:
        print_json(created)
        return
    # Only the secret on stdout, so KEY=$(flowctl keys create ...) captures it alone.
    err.print(f"key id {created['key_id']} for tenant {created['tenant']}; shown only this once, store it now:")
    echo(created["key"])


def keys_ls(
    tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant's keys."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List API keys (ids and limits, never the keys). Example: flowctl keys ls --tenant acme"""
    from flowctl.console import print_json

    rows = _run(server, token, lambda c: c.keys(tenant))
    for r in rows:
        r["models"] = ",".join(r["models"]) or "*"
    print_json(rows) if json_out else _table(rows, ["key_id", "tenant", "name", "rpm", "tpm", "max_concurrency",
                                                    "models", "revoked"])


def keys_revoke(
    key_id: str = typer.Argument(..., help="The key id (from `flowctl keys ls`)."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
) -> None:
    """Revoke an API key; it stops working at once. Example: flowctl keys revoke 3f2a9c0d1e4b5a67"""
    from flowctl.console import echo

    _run(server, token, lambda c: c.revoke(key_id))
    echo(f"key {key_id} revoked")


def usage(
    tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Requests, tokens and audio seconds per day, tenant, key, model and via (http, session, job).

    Example: flowctl usage --tenant acme
    """
    from flowctl.console import print_json

    rows = _run(server, token, lambda c: c.usage(tenant))
    print_json(rows) if json_out else _table(rows, ["day", "tenant", "key_id", "model", "via", "requests",
                                                    "prompt_tokens", "completion_tokens", "audio_seconds"])


def _parse_date(text: str) -> float:
    from datetime import UTC, datetime

    from flowctl.errors import CliError

    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"--expires {text!r} is not a date (YYYY-MM-DD) or ISO time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def register(app: typer.Typer) -> None:
    """Attach `tenants`, `keys create/ls/revoke` and `usage`."""
    from flowctl.commands.keys import keys_app

    app.add_typer(tenants_app)
    keys_app.command("create")(keys_create)
    keys_app.command("ls")(keys_ls)
    keys_app.command("revoke")(keys_revoke)
    app.command("usage")(usage)
