"""Versioned migrations: each store declares its steps; step i brings the schema to version i."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hub_store.sql.database import Database, Tx
from hub_store.sql.dialect import split_statements
from hub_store.sql.errors import SchemaTooNew
from hub_store.sql.state import State

# A step: a `;`-separated DDL script, a sequence of statements, or a function of the transaction.
Step = str | Sequence[str] | Callable[[Tx], None]


@dataclass(frozen=True)
class Migrations:
    """A store's name and its migration steps, oldest first (the store's schema is len(steps))."""

    store: str
    steps: tuple[Step, ...]

    @property
    def latest(self) -> int:
        """The schema version this flowctl writes."""
        return len(self.steps)


def check(db: Database, migrations: Migrations) -> int:
    """The store's current version; raise SchemaTooNew if a newer flowctl wrote it."""
    version = db.get_version()
    if version > migrations.latest:
        raise SchemaTooNew(f"the {migrations.store} store was written by a newer flowctl "
                           f"(schema {version} > {migrations.latest}); upgrade flowctl")
    return version


def migrate(db: Database, migrations: Migrations) -> tuple[int, int]:
    """Apply the missing steps in one transaction; returns (version before, version after)."""
    before = check(db, migrations)
    if before == migrations.latest:
        return before, before
    with db.transaction() as tx:
        # Another plane may have migrated while we waited for the lock: read again under it.
        current = db.get_version()
        if current > migrations.latest:
            raise SchemaTooNew(f"the {migrations.store} store was written by a newer flowctl "
                               f"(schema {current} > {migrations.latest}); upgrade flowctl")
        for step in migrations.steps[current:]:
            _apply(db, tx, step)
        db.set_version(tx, migrations.latest)
    return before, migrations.latest


def _apply(db: Database, tx: Tx, step: Step) -> None:
    if callable(step):
        step(tx)
        return
    statements = split_statements(step) if isinstance(step, str) else list(step)
    for statement in statements:
        tx.execute(db.ddl(statement))


def open_store(where: State | Path, migrations: Migrations, filename: str = "", *,
               pragmas: tuple[str, ...] = (), apply: bool = True, guest_of: str = "") -> Database:
    """Open a store's database and bring its schema up to date (`apply` False: only check it).

    `where` is the plane's State (the store's SQLite file is `filename` in its directory) or
    the path of the store's own SQLite file (what the stores took before the state URL).
    """
    if isinstance(where, Path):
        state, filename = State.parse(None, default_dir=where.parent), where.name
    else:
        state = where
    db = state.open(migrations.store, filename, pragmas=pragmas, guest_of=guest_of)
    try:
        migrate(db, migrations) if apply else check(db, migrations)
    except BaseException:
        db.close()
        raise
    return db


def located(path: Path, state: State | None) -> Path | State:
    """Where a store opens: `state` when it is PostgreSQL, else its own SQLite file `path` (as always)."""
    return state if state is not None and state.kind == "postgresql" else path
