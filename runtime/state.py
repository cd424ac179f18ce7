"""The plane's state: which database each store lives in, and their migrations as one list.

`--state URL` (config `state`) picks the engine: `sqlite:///DIR` (the default, DIR being
the data dir: each store its own file, as always) or `postgresql://user@host:port/db`
(every store in one database that several planes share, one schema per store). Each
store applies its missing migrations when it opens; `flowctl migrate` applies them ahead
of a rolling upgrade, and a plane refuses to start on a schema newer than it knows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hub_store import make_private_database, make_private_dir, sql


@dataclass(frozen=True)
class StoreSchema:
    """One store's migrations, its SQLite file (relative to the state directory) and, for a store
    whose tables live in another's file and schema, that store's name."""

    migrations: sql.Migrations
    filename: str
    guest_of: str = ""


def open_plane_state(url: str | None, data_dir: Path) -> sql.State:
    """The plane's State from its URL (None: SQLite files in `data_dir`); a bad URL is a one-line StateError."""
    state = sql.State.parse(url, default_dir=data_dir)
    if state.kind == "postgresql":
        state._shared_pool()  # connect now: an unreachable database is one line before anything starts
    return state


def store_schemas() -> list[StoreSchema]:
    """Every store of the plane that keeps rows in the state database, in migration order."""
    from hub_store.catalog import CATALOG_FILE
    from hub_store.schema import MIGRATIONS as CATALOG
    from runtime.api.audit import MIGRATIONS as AUDIT
    from runtime.api.users import MIGRATIONS as USERS
    from runtime.gateway.keys import MIGRATIONS as GATEWAY
    from runtime.jobs.artifacts import MIGRATIONS as ARTIFACTS
    from runtime.jobs.batch_store import MIGRATIONS as BATCHES
    from runtime.jobs.checkpoints import MIGRATIONS as INFERENCE
    from runtime.jobs.openai_files import MIGRATIONS as FILES
    from runtime.jobs.shards import MIGRATIONS as SHARDS
    from runtime.jobs.tables import DB_NAME
    from runtime.jobs.tables import MIGRATIONS as JOBS
    from runtime.scheduler.leadership import LEADER_FILE
    from runtime.scheduler.leadership import MIGRATIONS as LEADER
    from runtime.scheduler.store import MIGRATIONS as CLUSTER
    from runtime.sessions.store import MIGRATIONS as SESSIONS
    from runtime.sessions.store import SESSIONS_FILE

    return [StoreSchema(CLUSTER, "cluster.db"), StoreSchema(GATEWAY, "gateway.db"),
            StoreSchema(USERS, "users.db"), StoreSchema(AUDIT, "audit.db"), StoreSchema(CATALOG, CATALOG_FILE),
            StoreSchema(JOBS, DB_NAME), StoreSchema(SHARDS, DB_NAME, guest_of="jobs"),
            StoreSchema(ARTIFACTS, DB_NAME, guest_of="jobs"), StoreSchema(INFERENCE, "jobs/inference.db"),
            StoreSchema(BATCHES, "openai/batches.db"), StoreSchema(FILES, "openai/files.db"),
            StoreSchema(LEADER, LEADER_FILE), StoreSchema(SESSIONS, SESSIONS_FILE)]


@dataclass(frozen=True)
class Migrated:
    """What `migrate_all` did to one store."""

    store: str
    before: int
    after: int


def migrate_all(state: sql.State, *, check_only: bool = False) -> list[Migrated]:
    """Bring every store's schema up to date (or, `check_only`, report where each stands).

    Raises SchemaTooNew (one line) when a store was written by a newer flowctl.
    """
    done = []
    for schema in store_schemas():
        path = state.sqlite_path(schema.filename)
        if path is not None:
            if check_only and not path.exists():
                done.append(Migrated(schema.migrations.store, 0, 0))
                continue
            make_private_dir(path.parent)
            make_private_database(path)  # hashes of keys and tokens: owner-only, as the stores make them
        db = state.open(schema.migrations.store, schema.filename, guest_of=schema.guest_of, create=not check_only)
        try:
            if check_only:
                version = sql.check(db, schema.migrations)
                done.append(Migrated(schema.migrations.store, version, version))
            else:
                before, after = sql.migrate(db, schema.migrations)
                done.append(Migrated(schema.migrations.store, before, after))
        finally:
            db.close()
    return done
