"""The state's SQL layer: sqlite3's surface over SQLite (the default) and PostgreSQL.

A store opens its database from the plane's state URL and declares its versioned
migrations (step i brings the schema to version i; never edit a released step, add one):

    from hub_store import sql

    MIGRATIONS = sql.Migrations("cluster", (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",        # -> 1
        ("ALTER TABLE meta ADD COLUMN at REAL",),                               # -> 2
    ))

    state = sql.State.parse("postgresql://flow@db:5432/flow")  # or sqlite:///DIR, or None + default_dir
    db = sql.open_store(state, MIGRATIONS, "cluster.db")       # SQLite file DIR/cluster.db, or schema "cluster"
    db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", ("a", "b"))
    with db.transaction() as tx:                               # serialises this store's writers
        (value,) = tx.execute("SELECT value FROM meta WHERE key=?", ("a",)).fetchone()

Write SQL both engines accept (see `dialect`): `?` placeholders are translated, rows are
tuples, `lastrowid` is SQLite-only (use RETURNING), errors are sqlite3's classes on both
engines. On PostgreSQL every store has its own schema in one database and all share one
psycopg pool per process; versions live in public.flowctl_schema (PRAGMA user_version on SQLite).
Opening a store whose schema is newer than its Migrations raises SchemaTooNew (one line).
"""

from hub_store.sql.database import Database, PostgresDatabase, Result, SqliteDatabase, Tx
from hub_store.sql.dialect import add_rowid, split_statements, upsert
from hub_store.sql.errors import Error, IntegrityError, OperationalError, SchemaTooNew, StateError
from hub_store.sql.migrate import Migrations, Step, check, located, migrate, open_store
from hub_store.sql.state import State

__all__ = [
    "add_rowid",
    "Database",
    "Error",
    "IntegrityError",
    "Migrations",
    "OperationalError",
    "PostgresDatabase",
    "Result",
    "SchemaTooNew",
    "SqliteDatabase",
    "State",
    "StateError",
    "Step",
    "Tx",
    "check",
    "located",
    "migrate",
    "open_store",
    "split_statements",
    "upsert",
]
