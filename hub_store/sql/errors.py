"""The SQL layer's errors.

Both engines raise sqlite3's exception classes (PostgreSQL's are translated into
subclasses of them), so a store's `except sqlite3.IntegrityError` (or `sql.IntegrityError`)
holds on either engine. The state's own errors are StoreErrors with a one-line message.
"""

from __future__ import annotations

import sqlite3

from hub_store.errors import StoreError

Error = sqlite3.Error
IntegrityError = sqlite3.IntegrityError
OperationalError = sqlite3.OperationalError


class PostgresIntegrityError(sqlite3.IntegrityError):
    """PostgreSQL refused a write on a constraint (unique, not null, foreign key, check)."""


class PostgresOperationalError(sqlite3.OperationalError):
    """PostgreSQL could not be reached or could not run the statement (connection lost, timeout)."""


class PostgresError(sqlite3.DatabaseError):
    """Any other PostgreSQL error (a bad statement, a type mismatch)."""


class StateError(StoreError):
    """The state database cannot be used: a bad state URL, an engine not reachable, a schema too new."""


class SchemaTooNew(StateError):
    """A store's schema was written by a newer flowctl than this one."""


def from_psycopg(exc: Exception) -> Exception:
    """psycopg's error as the sqlite3-like class callers catch, in one line."""
    import psycopg

    if isinstance(exc, psycopg.IntegrityError):
        return PostgresIntegrityError(_one_line(exc))
    # A missing table or column and a syntax error are OperationalErrors in sqlite3 too.
    if (isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError, psycopg.ProgrammingError))
            or type(exc).__name__ == "PoolTimeout"):
        return PostgresOperationalError(_one_line(exc))
    return PostgresError(_one_line(exc))


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
