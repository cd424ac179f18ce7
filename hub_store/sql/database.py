"""One store's database on SQLite or PostgreSQL, with sqlite3's surface.

`Database.execute`/`executemany` run one statement in its own transaction;
`Database.transaction()` yields a `Tx` whose statements commit together. Results are
read eagerly into a `Result` (fetchone/fetchall/rowcount/lastrowid, iterable), rows as
tuples. Synchronous and thread-safe: call it from Trio through `trio.to_thread.run_sync`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import weakref
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from hub_store.sql import errors
from hub_store.sql.dialect import postgres_ddl, postgres_sql


class Result:
    """The rows and counts of one statement, read eagerly."""

    def __init__(self, rows: list[tuple], rowcount: int, lastrowid: int | None = None):
        self._rows = rows
        self._next = 0
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    def fetchone(self) -> Any:
        """The next row, or None."""
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self) -> list[Any]:
        """Every remaining row."""
        rows, self._next = self._rows[self._next:], len(self._rows)
        return rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class Tx(Protocol):
    """The statements of one transaction (`dialect`: 'sqlite' or 'postgresql')."""

    dialect: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        """Run one statement."""
        ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Result:
        """Run one statement once per row of parameters."""
        ...

    def ddl(self, sql: str) -> str:
        """A migration statement (SQLite's column types) in this engine's spelling."""
        ...


class Database:
    """One store's database (see the module docstring); `dialect` is 'sqlite' or 'postgresql'."""

    dialect: str
    name: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        """Run one statement in its own transaction."""
        with self.transaction(immediate=False) as tx:
            return tx.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Result:
        """Run one statement per row of parameters, in one transaction."""
        with self.transaction() as tx:
            return tx.executemany(sql, rows)

    def transaction(self, *, immediate: bool = True) -> Any:
        """A context manager yielding a Tx; commits on exit, rolls back on an exception.

        `immediate` serialises writers of this store (SQLite's BEGIN IMMEDIATE; on
        PostgreSQL a transaction-scoped advisory lock on the store), the semantics the
        stores' read-then-write transactions were written for.
        """
        raise NotImplementedError

    def ddl(self, sql: str) -> str:
        """A migration statement in this engine's spelling."""
        return sql

    def get_version(self) -> int:
        """This store's schema version (0 when never migrated)."""
        raise NotImplementedError

    def set_version(self, tx: Tx, version: int) -> None:
        """Record this store's schema version inside the migration's transaction."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the database (a shared PostgreSQL pool stays open for the other stores)."""


class SqliteTx:
    """Statements on the SQLite connection, whose lock the transaction holds."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        """Run one statement."""
        cur = self._conn.execute(sql, tuple(params))
        return Result(cur.fetchall() if cur.description else [], cur.rowcount, cur.lastrowid)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Result:
        """Run one statement once per row of parameters."""
        cur = self._conn.executemany(sql, rows)
        return Result([], cur.rowcount, cur.lastrowid)

    def ddl(self, sql: str) -> str:
        """SQLite's own spelling."""
        return sql


class SqliteDatabase(Database):
    """A store's own SQLite file: one connection behind a lock, WAL, synchronous=NORMAL."""

    dialect = "sqlite"

    def __init__(self, path: Path, name: str = "", *, timeout: float = 30.0, pragmas: Sequence[str] = (),
                 shared_file: bool = False):
        self.path = Path(path)
        self.name = name or self.path.stem
        # A store whose tables live in another store's file keeps its version in a table there
        # (PRAGMA user_version is the file owner's).
        self.shared_file = shared_file
        # Re-entrant: a store method may read through execute() inside its own transaction.
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=timeout)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        for pragma in pragmas:
            self._conn.execute(f"PRAGMA {pragma}")
        self._depth = 0

    @property
    def connection(self) -> sqlite3.Connection:
        """The raw connection, for SQLite-only maintenance (backup, VACUUM); hold `lock`."""
        return self._conn

    @property
    def lock(self) -> threading.RLock:
        """The lock around the connection."""
        return self._lock

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        """Run one statement (autocommit, or inside this thread's open transaction)."""
        with self._lock:
            return SqliteTx(self._conn).execute(sql, params)

    @contextmanager
    def transaction(self, *, immediate: bool = True) -> Iterator[SqliteTx]:
        """BEGIN [IMMEDIATE] ... COMMIT on the one connection (nested: a savepoint of the outer one)."""
        with self._lock:
            if self._depth:  # nested: a savepoint, all-or-nothing inside the outer transaction
                self._depth += 1
                name = f"sp{self._depth}"
                self._conn.execute(f"SAVEPOINT {name}")
                try:
                    yield SqliteTx(self._conn)
                except BaseException:
                    self._conn.execute(f"ROLLBACK TO {name}")
                    self._conn.execute(f"RELEASE {name}")
                    raise
                finally:
                    self._depth -= 1
                self._conn.execute(f"RELEASE {name}")
                return
            self._conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            self._depth = 1
            try:
                yield SqliteTx(self._conn)
            except BaseException:
                self._depth = 0
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self._depth = 0
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error:
                # A COMMIT that failed (a full disk: SQLITE_FULL) may leave the transaction
                # open, and then every later BEGIN on this connection would fail.
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def get_version(self) -> int:
        """PRAGMA user_version, as the stores always kept it (a shared file's guest: its row)."""
        with self._lock:
            if not self.shared_file:
                return int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            self._conn.execute(_GUEST_VERSIONS)
            row = self._conn.execute("SELECT version FROM flowctl_schema WHERE store=?", (self.name,)).fetchone()
            return int(row[0]) if row else 0

    def set_version(self, tx: Tx, version: int) -> None:
        """Set PRAGMA user_version (transactional in SQLite), or the guest's row."""
        if not self.shared_file:
            tx.execute(f"PRAGMA user_version={int(version)}")
            return
        tx.execute("INSERT INTO flowctl_schema (store, version) VALUES (?, ?) "
                   "ON CONFLICT (store) DO UPDATE SET version=excluded.version", (self.name, int(version)))

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


_GUEST_VERSIONS = "CREATE TABLE IF NOT EXISTS flowctl_schema (store TEXT PRIMARY KEY, version INTEGER NOT NULL)"


class PostgresTx:
    """Statements on one pooled PostgreSQL connection."""

    dialect = "postgresql"

    def __init__(self, conn: Any):
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        """Run one statement."""
        import psycopg

        try:
            cur = self._conn.execute(postgres_sql(sql), tuple(params))
            rows = cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            raise errors.from_psycopg(exc) from exc
        return Result(rows, cur.rowcount)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Result:
        """Run one statement once per row of parameters."""
        import psycopg

        rows = [tuple(r) for r in rows]
        if not rows:
            return Result([], 0)
        try:
            with self._conn.cursor() as cur:
                cur.executemany(postgres_sql(sql), rows)
                count = cur.rowcount
        except psycopg.Error as exc:
            raise errors.from_psycopg(exc) from exc
        return Result([], count)

    def ddl(self, sql: str) -> str:
        """SQLite's column types as PostgreSQL's."""
        return postgres_ddl(sql)


class PostgresDatabase(Database):
    """A store's tables in its own PostgreSQL schema (named after the store), over a shared pool."""

    dialect = "postgresql"

    def __init__(self, pool: Any, name: str, schema: str = ""):
        self.name = name
        self.schema = schema or name  # stores that query each other's tables share one schema
        self._pool = pool
        self._lock_key = zlib.crc32(f"flowctl:{name}".encode()) & 0x7FFFFFFF
        # Which schema each pooled connection's search_path points at (set lazily, on checkout).
        self._paths: weakref.WeakKeyDictionary[Any, str] = _SEARCH_PATHS
        self._held = threading.local()  # the connection of this thread's open transaction, if any

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        import psycopg

        held = getattr(self._held, "conn", None)
        if held is not None:  # this thread is inside one of this store's transactions: join it
            yield held
            return
        try:
            for _ in range(_CHECKOUTS):
                with self._pool.connection() as conn:
                    now = time.monotonic()
                    if now - _LAST_USED.get(conn, 0.0) > IDLE_CHECK_S:
                        # Idle a while: the server may have restarted since. A dead connection
                        # goes back broken (the pool drops it) and the next one is tried.
                        try:
                            conn.execute("SELECT 1")
                        except psycopg.OperationalError:
                            continue
                    if self._paths.get(conn) != self.schema:
                        conn.execute(f'SET search_path TO "{self.schema}", public')
                        self._paths[conn] = self.schema
                    _LAST_USED[conn] = now
                    yield conn
                    return
            raise errors.PostgresOperationalError("every pooled connection to the state database was lost")
        except psycopg.Error as exc:
            raise errors.from_psycopg(exc) from exc
        except Exception as exc:
            if type(exc).__name__ == "PoolTimeout":
                raise errors.from_psycopg(exc) from exc
            raise

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        """Run one statement (autocommit, or inside this thread's open transaction on this store).

        A read that finds its connection dead (the server restarted) is tried once more on a
        fresh one; a write is not (it may have committed before the connection died).
        """
        retry = getattr(self._held, "conn", None) is None and sql.lstrip()[:6].upper() == "SELECT"
        while True:
            conn = None
            try:
                with self._connection() as conn:
                    return PostgresTx(conn).execute(sql, params)
            except errors.PostgresOperationalError:
                if not retry or conn is None or not conn.broken:
                    raise
                retry = False

    @contextmanager
    def transaction(self, *, immediate: bool = True) -> Iterator[PostgresTx]:
        """BEGIN ... COMMIT on one pooled connection, held by this thread until the end (a nested
        call is a savepoint of it); `immediate` takes the store's advisory lock."""
        import psycopg

        with self._connection() as conn:
            outer = getattr(self._held, "conn", None) is None
            self._held.conn = conn
            try:
                with conn.transaction():
                    tx = PostgresTx(conn)
                    if immediate and outer:
                        tx.execute("SELECT pg_advisory_xact_lock(?)", (self._lock_key,))
                    yield tx
            except psycopg.Error as exc:  # COMMIT itself failed (the connection dropped)
                raise errors.from_psycopg(exc) from exc
            finally:
                if outer:
                    self._held.conn = None

    def ddl(self, sql: str) -> str:
        """SQLite's column types as PostgreSQL's."""
        return postgres_ddl(sql)

    def ensure_schema(self) -> None:
        """Create this store's schema and the shared version table if missing (under a global lock)."""
        with self._connection() as conn, conn.transaction():
            tx = PostgresTx(conn)
            tx.execute("SELECT pg_advisory_xact_lock(?)", (zlib.crc32(b"flowctl:schema") & 0x7FFFFFFF,))
            tx.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            tx.execute("CREATE TABLE IF NOT EXISTS public.flowctl_schema "
                       "(store TEXT PRIMARY KEY, version BIGINT NOT NULL, updated_at DOUBLE PRECISION NOT NULL)")

    def get_version(self) -> int:
        """This store's row of public.flowctl_schema (0 if none)."""
        try:
            row = self.execute("SELECT version FROM public.flowctl_schema WHERE store=?", (self.name,)).fetchone()
        except errors.PostgresOperationalError:
            if self.execute("SELECT to_regclass('public.flowctl_schema')").fetchone()[0] is not None:
                raise
            return 0  # never migrated: not even the version table exists
        return int(row[0]) if row else 0

    def set_version(self, tx: Tx, version: int) -> None:
        """Upsert this store's row of public.flowctl_schema."""
        tx.execute("INSERT INTO public.flowctl_schema (store, version, updated_at) "
                   "VALUES (?, ?, extract(epoch from now())) "
                   "ON CONFLICT (store) DO UPDATE SET version=excluded.version, updated_at=excluded.updated_at",
                   (self.name, int(version)))


_SEARCH_PATHS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
# When each pooled connection last answered (monotonic): one idle longer is checked at checkout.
_LAST_USED: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
IDLE_CHECK_S = 5.0
_CHECKOUTS = 64  # a pool's worth of dead connections at most, then a fresh one
