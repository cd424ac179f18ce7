"""The audit log: one row per state-changing request to the plane (SQLite: DATA_DIR/audit.db).

Who (principal name, how it was recognised, role), when, what (action, method, path),
on which tenant, from where (the client address, a trusted proxy's X-Forwarded-For) and
the HTTP status it got. Never a body, a query string or a header: no secret reaches it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hub_store import make_private_database, sql

MAX_ROWS = 10_000  # the most one query answers
KEEP_ROWS = 1_000_000  # the newest rows kept: anyone can make rows (refused requests are audited too)
KEEP_DAYS = 365
PRUNE_EVERY = 1000
_FIELDS = ("at", "principal", "kind", "role", "action", "method", "target", "tenant", "remote", "status")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, principal TEXT NOT NULL,
                                  kind TEXT NOT NULL, role TEXT, action TEXT, method TEXT NOT NULL,
                                  target TEXT NOT NULL, tenant TEXT, remote TEXT, status INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
CREATE INDEX IF NOT EXISTS audit_principal ON audit (principal, at)
"""
MIGRATIONS = sql.Migrations("audit", (_SCHEMA,))


@dataclass(frozen=True)
class AuditEntry:
    """One audited request."""

    at: float
    principal: str  # a user's name, "admin" (the admin key), "key:<id>" (a tenant API key) or "anonymous"
    kind: str  # admin-key, token, session, api-key, anonymous
    role: str | None
    action: str | None
    method: str
    target: str  # the request path (no query string)
    tenant: str | None
    remote: str | None
    status: int


class AuditLog:
    """audit.db; one connection guarded by a lock (calls come from threads)."""

    def __init__(self, where: Path | sql.State, *, keep_rows: int = KEEP_ROWS, keep_days: float = KEEP_DAYS) -> None:
        self.keep_rows = keep_rows
        self.keep_days = keep_days
        self._since_prune = 0
        path = where if isinstance(where, Path) else where.sqlite_path("audit.db")
        if path is not None:
            make_private_database(path)
        self._db = sql.open_store(where, MIGRATIONS, "audit.db")
        self._lock = threading.Lock()  # the prune counter

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def record(self, entry: AuditEntry) -> None:
        """Append one row (one statement: no lock shared with other planes)."""
        values = asdict(entry)
        (row_id,) = self._db.execute(
            f"INSERT INTO audit ({', '.join(_FIELDS)}) VALUES ({', '.join('?' * len(_FIELDS))}) RETURNING id",
            tuple(values[f] for f in _FIELDS)).fetchone()
        with self._lock:
            self._since_prune += 1
            prune = self._since_prune >= PRUNE_EVERY
            if prune:
                self._since_prune = 0
        if prune:
            self._db.execute("DELETE FROM audit WHERE id<=? OR at<?",
                             (row_id - self.keep_rows, entry.at - self.keep_days * 86400))

    def entries(self, *, since: float | None = None, principal: str | None = None, tenant: str | None = None,
                limit: int = 1000) -> list[dict]:
        """Rows newest first, filtered; a tenant's are the rows naming that tenant."""
        where, args = [], []
        for clause, value in (("at>=?", since), ("principal=?", principal), ("tenant=?", tenant)):
            if value is not None:
                where.append(clause)
                args.append(value)
        query = (f"SELECT id, {', '.join(_FIELDS)} FROM audit" + (f" WHERE {' AND '.join(where)}" if where else "")
                 + " ORDER BY id DESC LIMIT ?")
        rows = self._db.execute(query, (*args, max(1, min(limit, MAX_ROWS)))).fetchall()
        return [dict(zip(("id", *_FIELDS), r, strict=True)) for r in rows]


def now() -> float:
    """The time an entry is stamped with."""
    return time.time()
