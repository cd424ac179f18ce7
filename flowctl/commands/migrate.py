"""`flowctl migrate`: bring the state database's schemas up to date before planes start."""

from __future__ import annotations

from pathlib import Path

import typer

from flowctl.commands import plane_options as opt


def migrate(
    state: str | None = opt.state_option(),
    data_dir: Path | None = typer.Option(None, "--data-dir",
                                         help="State directory of the default SQLite state "
                                              "[env FLOWCTL_DATA_DIR; config data_dir]."),
    check: bool = typer.Option(False, "--check",
                               help="Only report each store's schema version; change nothing (exit 1 if one "
                                    "is behind or newer than this flowctl)."),
) -> None:
    """Apply the state's schema migrations (every store: cluster, gateway, users, audit, catalog, jobs).

    Planes apply missing migrations when they start; run this first to upgrade a shared
    PostgreSQL once, before restarting the planes one by one. A schema newer than this
    flowctl is refused. Example: flowctl migrate --state postgresql://flow@db:5432/flow
    """
    from flowctl.config import load_config
    from flowctl.console import out
    from flowctl.errors import CliError
    from hub_store import sql
    from runtime.state import migrate_all, open_plane_state, store_schemas

    cfg = load_config(data_dir=data_dir, state=state)
    try:
        plane_state = open_plane_state(cfg.state, Path(cfg.data_dir))
    except sql.StateError as exc:
        raise CliError(str(exc)) from None
    try:
        done = migrate_all(plane_state, check_only=check)
    except sql.StateError as exc:
        raise CliError(str(exc)) from None
    except sql.Error as exc:
        raise CliError(f"the state database {plane_state.display} refused a migration: {exc}") from None
    finally:
        plane_state.close()
    latest = {s.migrations.store: s.migrations.latest for s in store_schemas()}
    behind = []
    for step in done:
        if check:
            mark = "current" if step.after == latest[step.store] else f"behind (this flowctl: {latest[step.store]})"
            out.print(f"{step.store}: schema {step.after}, {mark}")
            if step.after != latest[step.store]:
                behind.append(step.store)
        elif step.before == step.after:
            out.print(f"{step.store}: schema {step.after}, current")
        else:
            out.print(f"{step.store}: schema {step.before} -> {step.after}")
    out.print(f"state: {plane_state.display}")
    if behind:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("migrate")(migrate)
