"""A state URL and the databases of the stores under it.

    sqlite:///DIR                      each store in its own file under DIR (the default: the data dir)
    postgresql://user:pw@host:port/db  every store in one database, one schema per store, one pool

Extra query parameters for PostgreSQL, stripped before connecting: `pool_max` (connections
per plane process, default 10), `pool_timeout` (seconds to wait for one, default 30).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from hub_store.sql.database import Database, PostgresDatabase, SqliteDatabase
from hub_store.sql.errors import StateError

_OWN_PARAMS = ("pool_max", "pool_timeout")


@dataclass
class State:
    """Where the plane's stores keep their rows; `open()` hands each store its Database."""

    url: str
    kind: str  # "sqlite" or "postgresql"
    directory: Path | None = None
    conninfo: str = ""
    pool_max: int = 10
    pool_timeout: float = 30.0
    _pool: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def parse(cls, url: str | None, *, default_dir: Path | None = None) -> State:
        """A State from `url`; None or '' means SQLite files in `default_dir`."""
        if not url:
            if default_dir is None:
                raise StateError("no state URL and no data dir to default to")
            return cls(f"sqlite:///{Path(default_dir)}", "sqlite", directory=Path(default_dir))
        parts = urlsplit(url)
        if parts.scheme == "sqlite":
            if parts.netloc:
                raise StateError(f"state URL {url!r}: write sqlite:///ABSOLUTE/DIR (three slashes), not a host")
            path = parts.path
            if not path or path == "/":
                raise StateError(f"state URL {url!r} names no directory (sqlite:///DIR)")
            return cls(url, "sqlite", directory=Path(path))
        if parts.scheme in ("postgresql", "postgres"):
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            try:
                pool_max = int(query.pop("pool_max", 10))
                pool_timeout = float(query.pop("pool_timeout", 30))
            except ValueError:
                raise StateError(f"state URL {_redact(url)!r}: pool_max and pool_timeout must be numbers") from None
            if pool_max < 1 or pool_timeout <= 0:
                raise StateError(f"state URL {_redact(url)!r}: pool_max must be >= 1 and pool_timeout > 0")
            if not parts.path.strip("/"):
                raise StateError(f"state URL {_redact(url)!r} names no database (postgresql://user@host:port/DB)")
            conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(query), ""))
            return cls(url, "postgresql", conninfo=conninfo, pool_max=pool_max, pool_timeout=pool_timeout)
        raise StateError(f"state URL {_redact(url)!r}: the scheme must be sqlite:// or postgresql://")

    @property
    def display(self) -> str:
        """The URL with any password hidden (for logs and messages)."""
        return _redact(self.url)

    def sqlite_path(self, filename: str) -> Path | None:
        """The SQLite file a store named `filename` would use; None on PostgreSQL."""
        return self.directory / filename if self.kind == "sqlite" and self.directory is not None else None

    def open(self, name: str, filename: str, *, pragmas: tuple[str, ...] = (), guest_of: str = "",
             create: bool = True) -> Database:
        """Store `name`'s database: DIR/`filename` on SQLite, schema `name` on PostgreSQL.

        `guest_of` names the store whose file (and schema) this one's tables live in, because
        its queries join that store's tables; its schema version is then its own row there.
        `create` False leaves a PostgreSQL database untouched (no schema is created), to only read versions.
        """
        if self.kind == "sqlite":
            assert self.directory is not None
            return SqliteDatabase(self.directory / filename, name, pragmas=pragmas, shared_file=bool(guest_of))
        db = PostgresDatabase(self._shared_pool(), name, schema=guest_of)
        if create:
            db.ensure_schema()
        return db

    def _shared_pool(self) -> Any:
        with self._lock:
            if self._pool is None:
                self._pool = _open_pool(self)
            return self._pool

    def close(self) -> None:
        """Close the PostgreSQL pool (the stores' SQLite files close with their stores)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


def _open_pool(state: State) -> Any:
    try:
        import psycopg
        from psycopg.adapt import Dumper, Loader
        from psycopg_pool import ConnectionPool
    except ImportError:
        raise StateError("a postgresql:// state needs psycopg and psycopg-pool "
                         "(pip install 'flowctl[scale]')") from None

    class BoolAsInt(Dumper):
        """SQLite stores write booleans into INTEGER columns; PostgreSQL gets 0/1 too."""

        oid = psycopg.postgres.types["int8"].oid

        def dump(self, obj: Any) -> bytes:
            return b"1" if obj else b"0"

    class NumericAsNumber(Loader):
        """SUM() of a BIGINT is NUMERIC: read it back as int (or float), as SQLite gives it."""

        def load(self, data: Any) -> Any:
            text = bytes(data).decode()
            try:
                return int(text)
            except ValueError:
                return float(text)

    def configure(conn: Any) -> None:
        conn.adapters.register_dumper(bool, BoolAsInt)
        conn.adapters.register_loader("numeric", NumericAsNumber)

    pool = ConnectionPool(state.conninfo, min_size=1, max_size=state.pool_max, timeout=state.pool_timeout,
                          # Client-side binding: `? IS NULL` with None works as in SQLite (server-side
                          # binding cannot type a bare NULL parameter).
                          kwargs={"autocommit": True, "cursor_factory": psycopg.ClientCursor}, configure=configure,
                          open=False, name="flowctl-state")  # idle connections checked at checkout
    try:
        pool.open(wait=True, timeout=min(state.pool_timeout, 10.0))
    except Exception as exc:
        pool.close()
        raise StateError(f"cannot connect to the state database {state.display}: "
                         f"{' '.join(str(exc).split()) or type(exc).__name__}") from None
    return pool


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{parts.username}:***@{host}", parts.path, parts.query, ""))
