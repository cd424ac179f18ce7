"""Realtime sessions kept in the planes' shared state, so a session survives the plane it began on.

With several planes (docs/scale-out.md) a session's configuration, its history and the digest of
its engine token are written to the `sessions` store when it is created and after every turn; a
client that reconnects to another plane with the same session id and token resumes it there,
history included. The token itself is never stored (SHA-256 only, compared in constant time).
A deleted session's row goes; an idle one is refused (and dropped) once past the idle timeout.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hub_store import sql
from runtime.sessions.history import History

if TYPE_CHECKING:
    from runtime.dispatch.limits import Principal
    from runtime.gateway.service import KeyService

SESSIONS_FILE = "sessions.db"
MIGRATIONS = sql.Migrations("sessions", ("""
CREATE TABLE sessions (
    session_id   TEXT PRIMARY KEY,
    tenant       TEXT NOT NULL,
    model        TEXT NOT NULL,
    token_sha256 TEXT NOT NULL,
    key_id       TEXT,
    config       TEXT NOT NULL,
    history      TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   REAL NOT NULL
)""",))
_CONFIG = ("asr_model", "tts_model", "voice", "stream", "max_tokens", "metadata")


@dataclass(frozen=True)
class StoredSession:
    """A session as another plane left it: enough to serve it on."""

    session_id: str
    tenant: str
    model: str
    key_id: str | None
    config: dict[str, Any]
    history: History
    created_at: str
    idle_s: float  # seconds since it was last written


def token_digest(token: str) -> str:
    """What is stored of an engine token."""
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    """The `sessions` store (synchronous: call it through `trio.to_thread.run_sync`)."""

    def __init__(self, db: sql.Database):
        self.db = db

    @classmethod
    def open(cls, state: sql.State) -> SessionStore:
        """The store in the plane's state (DIR/sessions.db on SQLite), migrated."""
        return cls(sql.open_store(state, MIGRATIONS, SESSIONS_FILE))

    def close(self) -> None:
        """Release the database."""
        self.db.close()

    def save(self, session: Any) -> None:
        """Write a session's configuration and history (insert or replace)."""
        config = {name: getattr(session, name) for name in _CONFIG}
        history = {"system_prompt": session.history.system_prompt, "max_tokens": session.history.max_tokens,
                   "turns": session.history.turns}
        self.db.execute(
            "INSERT INTO sessions (session_id, tenant, model, token_sha256, key_id, config, history, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET "
            "config=excluded.config, history=excluded.history, updated_at=excluded.updated_at",
            (session.session_id, session.tenant, session.model, token_digest(session.token), session.key_id,
             json.dumps(config), json.dumps(history), session.created_at, time.time()))

    def load(self, session_id: str, token: str) -> StoredSession | None:
        """The session if `token` is its engine token, else None (the same answer for a wrong id)."""
        row = self.db.execute("SELECT session_id, tenant, model, token_sha256, key_id, config, history, "
                              "created_at, updated_at FROM sessions WHERE session_id=?", (session_id,)).fetchone()
        expected = row[3] if row is not None else token_digest("")
        if not token or not hmac.compare_digest(expected, token_digest(token)) or row is None:
            return None
        return _stored(row)

    def find(self, session_id: str) -> StoredSession | None:
        """The session by id alone (the owner's API calls: the caller's tenant is checked by the caller)."""
        row = self.db.execute("SELECT session_id, tenant, model, token_sha256, key_id, config, history, "
                              "created_at, updated_at FROM sessions WHERE session_id=?", (session_id,)).fetchone()
        return None if row is None else _stored(row)

    def delete(self, session_id: str) -> None:
        """Forget a session (deleted, expired or revoked)."""
        self.db.execute("DELETE FROM sessions WHERE session_id=?", (session_id,))


def _stored(row: tuple) -> StoredSession:
    history = json.loads(row[6])
    return StoredSession(row[0], row[1], row[2], row[4], json.loads(row[5]),
                         History(system_prompt=history["system_prompt"], max_tokens=history["max_tokens"],
                                 turns=[(role, text) for role, text in history["turns"]]),
                         row[7], max(0.0, time.time() - float(row[8])))


async def key_principal(keys: KeyService, key_id: str | None, tenant: str) -> Principal | None:
    """The principal of the key that opened a session another plane began, if that key still serves."""
    from runtime.dispatch.limits import Principal
    from runtime.gateway.keys import KeyStoreError, tenant_limits
    from runtime.gateway.service import ANONYMOUS_KEY_ID

    def lookup() -> Principal | None:
        try:
            owner = keys.store.tenant(tenant)
            if key_id is None or key_id == ANONYMOUS_KEY_ID:
                anonymous = keys.anonymous_tenant == tenant
                return Principal(tenant, ANONYMOUS_KEY_ID, tenant_limits=tenant_limits(owner)) if anonymous else None
            record = keys.store.key(key_id)
        except KeyStoreError:
            return None
        if record.revoked_at is not None or record.tenant != tenant or (
                record.expires_at is not None and record.expires_at <= time.time()):
            return None
        return Principal(tenant, key_id, record.limits, tenant_limits(owner), record.models)

    return await keys.run_store(lookup)
