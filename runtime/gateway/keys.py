"""Tenants, API keys and usage in the state database (SQLite: data_dir/gateway.db; schema versioned).

A key is `fgk_<id>_<secret>`: the id (8 bytes, hex) finds the row, the secret (32
random bytes) is never stored: only sha256 of the whole key, compared in constant
time. Every method is synchronous: the gateway calls them through a CapacityLimiter'd
thread (`KeyStore.run`), never on the event loop. Nothing is cached here: a key revoked
through any plane sharing the database is refused by the next lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hub_store import make_private_database, sql
from runtime.dispatch.limits import Limits, Principal
from runtime.errors import FlowError

KEY_PREFIX = "fgk_"
TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_KEY = re.compile(r"fgk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_SCHEMA_1 = """
CREATE TABLE tenants (name TEXT PRIMARY KEY, rpm INTEGER, tpm INTEGER, max_concurrency INTEGER,
                      created_at REAL NOT NULL);
CREATE TABLE keys (key_id TEXT PRIMARY KEY, tenant TEXT NOT NULL REFERENCES tenants(name),
                   name TEXT NOT NULL, key_hash TEXT NOT NULL, rpm INTEGER, tpm INTEGER,
                   max_concurrency INTEGER, models TEXT NOT NULL, expires_at REAL,
                   created_at REAL NOT NULL, revoked_at REAL);
CREATE TABLE usage (day TEXT NOT NULL, tenant TEXT NOT NULL, key_id TEXT NOT NULL,
                    model TEXT NOT NULL, requests INTEGER NOT NULL,
                    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
                    PRIMARY KEY (day, tenant, key_id, model))
"""


def _schema_1(tx: sql.Tx) -> None:
    # A deleted tenant's revoked keys keep its name: SQLite lifts the reference for that delete
    # (see delete_tenant); PostgreSQL cannot, so there the reference is not declared.
    script = _SCHEMA_1 if tx.dialect == "sqlite" else _SCHEMA_1.replace(" REFERENCES tenants(name)", "")
    for statement in sql.split_statements(script):
        tx.execute(tx.ddl(statement))


# Version 1 -> 2: tenants get max_sessions; usage rows get `via` in their key (old rows were HTTP
# traffic, the only kind counted then). SQLite cannot change a primary key, so usage is rebuilt.
_MIGRATE_FROM_1 = """
ALTER TABLE tenants ADD COLUMN max_sessions INTEGER;
CREATE TABLE usage_v2 (day TEXT NOT NULL, tenant TEXT NOT NULL, key_id TEXT NOT NULL,
                       model TEXT NOT NULL, via TEXT NOT NULL, requests INTEGER NOT NULL,
                       prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
                       PRIMARY KEY (day, tenant, key_id, model, via));
INSERT INTO usage_v2 SELECT day, tenant, key_id, model, 'http', requests, prompt_tokens, completion_tokens
                     FROM usage;
DROP TABLE usage;
ALTER TABLE usage_v2 RENAME TO usage
"""
# Version 2 -> 3: usage rows count audio seconds (transcribed or spoken); older rows had none.
_MIGRATE_FROM_2 = "ALTER TABLE usage ADD COLUMN audio_seconds REAL NOT NULL DEFAULT 0"
MIGRATIONS = sql.Migrations("gateway", (_schema_1, _MIGRATE_FROM_1, _MIGRATE_FROM_2))
SCHEMA_VERSION = MIGRATIONS.latest
# What a tenant shows; `LIMIT_FIELDS` may change with `update_tenant` (None: unlimited).
LIMIT_FIELDS = ("rpm", "tpm", "max_concurrency", "max_sessions")
_TENANT_FIELDS = ("name", "rpm", "tpm", "max_concurrency", "max_sessions", "created_at")
_USAGE_FIELDS = ("day", "tenant", "key_id", "model", "via", "requests", "prompt_tokens", "completion_tokens",
                 "audio_seconds")


class KeyStoreError(FlowError):
    """A tenant or key operation that cannot be done; `status` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class KeyRecord:
    """A stored key (never its secret)."""

    key_id: str
    tenant: str
    name: str
    key_hash: str
    limits: Limits
    models: tuple[str, ...]
    expires_at: float | None
    created_at: float
    revoked_at: float | None

    def public(self) -> dict:
        """What `keys ls` shows."""
        return {"key_id": self.key_id, "tenant": self.tenant, "name": self.name, "rpm": self.limits.rpm,
                "tpm": self.limits.tpm, "max_concurrency": self.limits.max_concurrency,
                "models": list(self.models), "expires_at": self.expires_at, "created_at": self.created_at,
                "revoked": self.revoked_at is not None}


def parse_key(key: str) -> tuple[str, str] | None:
    """(key id, sha256 hex of the key) or None if it is not shaped like a gateway key."""
    match = _KEY.fullmatch(key)
    if match is None:
        return None
    return match.group(1), hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """The gateway's SQLite file; one connection guarded by a lock (calls come from threads)."""

    def __init__(self, where: Path | sql.State) -> None:
        """Open (and migrate) the store: a SQLite file path, or the plane's state."""
        path = where if isinstance(where, Path) else where.sqlite_path("gateway.db")
        if path is not None:
            make_private_database(path)  # tenants and key hashes: owner-only, like its -wal/-shm
        self._db = sql.open_store(where, MIGRATIONS, "gateway.db", pragmas=("foreign_keys=ON",))

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    @contextmanager
    def _references_lifted(self) -> Iterator[None]:
        """SQLite only: keys may outlive their tenant's row (PRAGMA, so outside any transaction)."""
        if not isinstance(self._db, sql.SqliteDatabase):
            yield
            return
        with self._db.lock:
            self._db.execute("PRAGMA foreign_keys=OFF")
            try:
                yield
            finally:
                self._db.execute("PRAGMA foreign_keys=ON")

    # -- tenants ----------------------------------------------------------------------------

    def create_tenant(self, name: str, limits: Limits = Limits()) -> dict:
        """A new tenant; 409 if the name is taken."""
        if not isinstance(name, str) or not TENANT_NAME.fullmatch(name):
            raise KeyStoreError(400, "a tenant name is 1-63 of a-z 0-9 . _ - (starting with a letter or digit)")
        try:
            self._db.execute(f"INSERT INTO tenants ({', '.join(_TENANT_FIELDS)}) VALUES (?, ?, ?, ?, ?, ?)",
                             (name, limits.rpm, limits.tpm, limits.max_concurrency, limits.max_sessions,
                              time.time()))
        except sql.IntegrityError:
            raise KeyStoreError(409, f"tenant {name!r} already exists") from None
        return self.tenant(name)

    def update_tenant(self, name: str, changes: dict[str, int | None]) -> dict:
        """Set some of a tenant's limits (None: unlimited); the tenant as it is now, or 404."""
        unknown = set(changes) - set(LIMIT_FIELDS)
        if unknown:
            raise KeyStoreError(400, f"a tenant's limits are {', '.join(LIMIT_FIELDS)}, not {sorted(unknown)!r}")
        if changes:
            columns = ", ".join(f"{field}=?" for field in changes)  # names checked above
            updated = self._db.execute(f"UPDATE tenants SET {columns} WHERE name=?",
                                       (*changes.values(), name)).rowcount
            if not updated:
                raise KeyStoreError(404, f"no tenant {name!r}")
        return self.tenant(name)

    def tenant(self, name: str) -> dict:
        """One tenant; 404 if none."""
        row = self._db.execute(f"SELECT {', '.join(_TENANT_FIELDS)} FROM tenants WHERE name=?",
                               (name,)).fetchone()
        if row is None:
            raise KeyStoreError(404, f"no tenant {name!r}")
        return dict(zip(_TENANT_FIELDS, row, strict=True))

    def tenants(self) -> list[dict]:
        """Every tenant with its count of live keys."""
        columns = ", ".join(f"t.{field}" for field in _TENANT_FIELDS)
        rows = self._db.execute(
                f"SELECT {columns}, "
                "(SELECT COUNT(*) FROM keys k WHERE k.tenant=t.name AND k.revoked_at IS NULL) "
                "FROM tenants t ORDER BY t.name").fetchall()
        return [dict(zip((*_TENANT_FIELDS, "keys"), r, strict=True)) for r in rows]

    def delete_tenant(self, name: str) -> list[str]:
        """Remove a tenant and revoke its keys; returns the revoked key ids."""
        self.tenant(name)
        now = time.time()
        with self._references_lifted(), self._db.transaction() as tx:
            ids = [r[0] for r in tx.execute("SELECT key_id FROM keys WHERE tenant=?", (name,))]
            tx.execute("UPDATE keys SET revoked_at=COALESCE(revoked_at, ?) WHERE tenant=?", (now, name))
            tx.execute("DELETE FROM tenants WHERE name=?", (name,))
        return ids

    # -- keys -------------------------------------------------------------------------------

    def create_key(self, tenant: str, *, name: str = "", limits: Limits = Limits(), models: tuple[str, ...] = (),
                   expires_at: float | None = None) -> tuple[str, KeyRecord]:
        """(the key, shown once, and its record)."""
        self.tenant(tenant)
        key_id = secrets.token_hex(8)
        key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        digest = hashlib.sha256(key.encode()).hexdigest()
        self._db.execute("INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                         (key_id, tenant, name, digest, limits.rpm, limits.tpm, limits.max_concurrency,
                          ",".join(models), expires_at, time.time()))
        return key, self.key(key_id)

    def key(self, key_id: str) -> KeyRecord:
        """A key's record; 404 if none."""
        row = self._db.execute("SELECT * FROM keys WHERE key_id=?", (key_id,)).fetchone()
        if row is None:
            raise KeyStoreError(404, f"no key {key_id!r}")
        return _record(row)

    def keys(self, tenant: str | None = None) -> list[KeyRecord]:
        """Every key, or a tenant's."""
        if tenant is None:
            rows = self._db.execute("SELECT * FROM keys ORDER BY created_at").fetchall()
        else:
            rows = self._db.execute("SELECT * FROM keys WHERE tenant=? ORDER BY created_at", (tenant,)).fetchall()
        return [_record(r) for r in rows]

    def revoke(self, key_id: str) -> None:
        """Revoke a key (idempotent); 404 if none."""
        self.key(key_id)
        self._db.execute("UPDATE keys SET revoked_at=COALESCE(revoked_at, ?) WHERE key_id=?",
                         (time.time(), key_id))

    def principal(self, key: str) -> Principal | None:
        """The principal of a valid, live key, else None (constant-time hash compare)."""
        parsed = parse_key(key)
        if parsed is None:
            return None
        key_id, digest = parsed
        try:
            record = self.key(key_id)
        except KeyStoreError:
            return None
        if not hmac.compare_digest(record.key_hash, digest) or record.revoked_at is not None:
            return None
        if record.expires_at is not None and record.expires_at <= time.time():
            return None
        try:
            tenant = self.tenant(record.tenant)
        except KeyStoreError:
            return None
        return Principal(record.tenant, key_id, record.limits, tenant_limits(tenant), record.models)

    # -- usage ------------------------------------------------------------------------------

    def add_usage(self, rows: list[tuple]) -> None:
        """Add (day, tenant, key_id, model, via, requests, prompt, completion[, audio_seconds]) rows in
        one transaction."""
        full = [row if len(row) == len(_USAGE_FIELDS) else (*row, 0.0) for row in rows]
        self._db.executemany(
            f"INSERT INTO usage ({', '.join(_USAGE_FIELDS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (day, tenant, key_id, model, via) DO UPDATE "
            "SET requests=usage.requests+excluded.requests, "
            "prompt_tokens=usage.prompt_tokens+excluded.prompt_tokens, "
            "completion_tokens=usage.completion_tokens+excluded.completion_tokens, "
            "audio_seconds=usage.audio_seconds+excluded.audio_seconds", full)

    def usage(self, tenant: str | None = None) -> list[dict]:
        """Usage per day, tenant, key, model and via (http, session, job), audio seconds included."""
        query = (f"SELECT {', '.join(_USAGE_FIELDS)} FROM usage" + (" WHERE tenant=?" if tenant else "")
                 + " ORDER BY day, tenant, key_id, model, via")
        rows = self._db.execute(query, (tenant,) if tenant else ()).fetchall()
        return [{**dict(zip(_USAGE_FIELDS, r, strict=True)), "audio_seconds": round(r[-1], 3)} for r in rows]


def tenant_limits(tenant: dict) -> Limits:
    """The limits of a tenant as `tenant()` shows it."""
    return Limits(*(tenant[field] for field in LIMIT_FIELDS))


def _record(row: tuple) -> KeyRecord:
    key_id, tenant, name, digest, rpm, tpm, conc, models, expires, created, revoked = row
    return KeyRecord(key_id, tenant, name, digest, Limits(rpm, tpm, conc),
                     tuple(m for m in models.split(",") if m), expires, created, revoked)
