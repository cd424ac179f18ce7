"""Users, their personal access tokens and their browser sessions (SQLite: DATA_DIR/users.db).

A token is `fcp_<id>_<secret>`: the id finds the row, only sha256 of the whole token is kept
and compared in constant time; it is shown once. A session id (the `flowctl_session` cookie)
is likewise kept only as its sha256, with an absolute expiry. Passwords are scrypt hashes
(runtime/api/passwords.py). Every method is synchronous: call it from a thread. Nothing is
cached here: a token revoked or a session closed through any plane is refused by the next lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from hub_store import make_private_database, sql
from runtime.api.passwords import PasswordPolicyError, hash_password, verify_password
from runtime.api.principals import ROLES, TENANT_ROLES, Principal
from runtime.api.responses import ApiError

TOKEN_PREFIX = "fcp_"
SESSION_TTL_S = 12 * 3600
USER_NAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_TOKEN = re.compile(r"fcp_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
# `"user"` is quoted: a reserved word in PostgreSQL (SQLite takes either spelling).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, role TEXT NOT NULL, tenant TEXT,
                                  password_hash TEXT NOT NULL, created_at REAL NOT NULL,
                                  password_changed_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (token_id TEXT PRIMARY KEY, "user" TEXT NOT NULL REFERENCES users(name)
                                   ON DELETE CASCADE, name TEXT NOT NULL, token_hash TEXT NOT NULL,
                                   created_at REAL NOT NULL, expires_at REAL, revoked_at REAL);
CREATE TABLE IF NOT EXISTS sessions (session_hash TEXT PRIMARY KEY, "user" TEXT NOT NULL REFERENCES users(name)
                                     ON DELETE CASCADE, csrf_token TEXT NOT NULL, created_at REAL NOT NULL,
                                     expires_at REAL NOT NULL)
"""
MIGRATIONS = sql.Migrations("users", (_SCHEMA,))
SCHEMA_VERSION = MIGRATIONS.latest


@dataclass(frozen=True)
class User:
    """A stored user (never its password hash)."""

    name: str
    role: str
    tenant: str | None
    created_at: float

    def public(self) -> dict:
        """What `users ls` shows."""
        return {"name": self.name, "role": self.role, "tenant": self.tenant, "created_at": self.created_at}


@dataclass(frozen=True)
class TokenRecord:
    """A personal access token's row (never the token)."""

    token_id: str
    user: str
    name: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None

    def public(self) -> dict:
        """What `users token ls` shows."""
        return {"token_id": self.token_id, "user": self.user, "name": self.name, "created_at": self.created_at,
                "expires_at": self.expires_at, "revoked": self.revoked_at is not None}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def check_role(role: object, tenant: object) -> tuple[str, str | None]:
    """(role, tenant) when they fit together; else ApiError 400 naming the problem."""
    if role not in ROLES:
        raise ApiError(400, f"role {role!r} is not one of {', '.join(ROLES)}")
    assert isinstance(role, str)
    if role in TENANT_ROLES:
        if not isinstance(tenant, str) or not TENANT_NAME.fullmatch(tenant):
            raise ApiError(400, f"role {role} needs a tenant (a-z 0-9 . _ -)")
        return role, tenant
    if tenant is not None:
        raise ApiError(400, f"role {role} sees every tenant; give a tenant only with tenant-admin or tenant-viewer")
    return role, None


class UserStore:
    """users.db; one connection guarded by a lock (calls come from threads)."""

    def __init__(self, where: Path | sql.State, *, session_ttl_s: float = SESSION_TTL_S) -> None:
        """Open (and migrate) the store: a SQLite file path, or the plane's state."""
        path = where if isinstance(where, Path) else where.sqlite_path("users.db")
        if path is not None:
            make_private_database(path)  # password hashes: owner-only
        self.session_ttl_s = session_ttl_s
        self._db = sql.open_store(where, MIGRATIONS, "users.db", pragmas=("foreign_keys=ON",))

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    # -- users ------------------------------------------------------------------------------

    def create_user(self, name: object, role: object, password: str, tenant: object = None) -> User:
        """A new user; 400 for a bad name, role or password, 409 if the name is taken."""
        if not isinstance(name, str) or not USER_NAME.fullmatch(name):
            raise ApiError(400, "a user name is 1-64 of a-z 0-9 . _ @ - (starting with a letter or digit)")
        role, tenant = check_role(role, tenant)
        digest = _hash(password)
        now = time.time()
        try:
            self._db.execute("INSERT INTO users VALUES (?, ?, ?, ?, ?, ?)", (name, role, tenant, digest, now, now))
        except sql.IntegrityError:
            raise ApiError(409, f"user {name!r} already exists") from None
        return self.user(name)

    def user(self, name: str) -> User:
        """One user; 404 if none."""
        row = self._db.execute("SELECT name, role, tenant, created_at FROM users WHERE name=?", (name,)).fetchone()
        if row is None:
            raise ApiError(404, f"no user {name!r}")
        return User(*row)

    def users(self, tenant: str | None = None) -> list[User]:
        """Every user (or a tenant's), by name."""
        query = "SELECT name, role, tenant, created_at FROM users" + (" WHERE tenant=?" if tenant else "")
        rows = self._db.execute(query + " ORDER BY name", (tenant,) if tenant else ()).fetchall()
        return [User(*r) for r in rows]

    def update_user(self, name: str, role: object, tenant: object) -> User:
        """Change a user's role (and tenant); its sessions end, its tokens carry the new role."""
        self.user(name)
        role, tenant = check_role(role, tenant)
        with self._db.transaction() as tx:
            tx.execute("UPDATE users SET role=?, tenant=? WHERE name=?", (role, tenant, name))
            tx.execute('DELETE FROM sessions WHERE "user"=?', (name,))
        return self.user(name)

    def delete_user(self, name: str) -> None:
        """Remove a user with its tokens and sessions; 404 if none."""
        deleted = self._db.execute("DELETE FROM users WHERE name=?", (name,)).rowcount
        if not deleted:
            raise ApiError(404, f"no user {name!r}")

    def set_password(self, name: str, password: str) -> None:
        """Set a new password; the user's browser sessions end (its tokens stay)."""
        self.user(name)
        digest = _hash(password)
        with self._db.transaction() as tx:
            tx.execute("UPDATE users SET password_hash=?, password_changed_at=? WHERE name=?",
                       (digest, time.time(), name))
            tx.execute('DELETE FROM sessions WHERE "user"=?', (name,))

    def check_password(self, name: str, password: str) -> User | None:
        """The user when `password` is theirs, else None (as slow for an unknown name)."""
        row = self._db.execute("SELECT password_hash FROM users WHERE name=?", (name,)).fetchone()
        if not verify_password(password, row[0] if row else None):
            return None
        try:
            return self.user(name)
        except ApiError:
            return None  # removed meanwhile

    # -- personal access tokens -------------------------------------------------------------

    def create_token(self, user: str, name: str = "", expires_at: float | None = None) -> tuple[str, TokenRecord]:
        """(the token, shown once, and its record)."""
        self.user(user)
        if not isinstance(name, str) or len(name) > 64:
            raise ApiError(400, "a token name is a string of at most 64 characters")
        if expires_at is not None and expires_at <= time.time():
            raise ApiError(400, "expires_at is in the past")
        token_id = secrets.token_hex(8)
        token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        self._db.execute("INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, NULL)",
                         (token_id, user, name, _sha256(token), time.time(), expires_at))
        return token, self.token(user, token_id)

    def token(self, user: str, token_id: str) -> TokenRecord:
        """A user's token record; 404 if none (or another user's)."""
        row = self._db.execute('SELECT token_id, "user", name, created_at, expires_at, revoked_at FROM tokens '
                               'WHERE token_id=? AND "user"=?', (token_id, user)).fetchone()
        if row is None:
            raise ApiError(404, f"user {user!r} has no token {token_id!r}")
        return TokenRecord(*row)

    def tokens(self, user: str) -> list[TokenRecord]:
        """A user's tokens, oldest first."""
        self.user(user)
        rows = self._db.execute('SELECT token_id, "user", name, created_at, expires_at, revoked_at FROM tokens '
                                'WHERE "user"=? ORDER BY created_at', (user,)).fetchall()
        return [TokenRecord(*r) for r in rows]

    def revoke_token(self, user: str, token_id: str) -> None:
        """Revoke a token (idempotent); 404 if none."""
        self.token(user, token_id)
        self._db.execute("UPDATE tokens SET revoked_at=COALESCE(revoked_at, ?) WHERE token_id=?",
                         (time.time(), token_id))

    def token_principal(self, token: str) -> Principal | None:
        """The principal of a live token, else None."""
        match = _TOKEN.fullmatch(token)
        if match is None:
            return None
        row = self._db.execute(
            "SELECT t.token_hash, t.expires_at, t.revoked_at, u.name, u.role, u.tenant FROM tokens t "
            'JOIN users u ON u.name=t."user" WHERE t.token_id=?', (match.group(1),)).fetchone()
        if row is None or not hmac.compare_digest(row[0], _sha256(token)) or row[2] is not None:
            return None
        if row[1] is not None and row[1] <= time.time():
            return None
        return Principal(row[3], row[4], row[5], kind="token", token_id=match.group(1))

    # -- browser sessions -------------------------------------------------------------------

    def open_session(self, user: str) -> tuple[str, Principal]:
        """A fresh session id (the cookie's value, never stored) and its principal."""
        session_id = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = time.time()
        with self._db.transaction() as tx:
            tx.execute("DELETE FROM sessions WHERE expires_at<=?", (now,))
            tx.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                       (_sha256(session_id), user, csrf, now, now + self.session_ttl_s))
        principal = self.session_principal(session_id)
        assert principal is not None
        return session_id, principal

    def session_principal(self, session_id: str) -> Principal | None:
        """The principal of a live session id, else None."""
        if not session_id or len(session_id) > 128:
            return None
        row = self._db.execute(
            "SELECT s.csrf_token, s.expires_at, u.name, u.role, u.tenant FROM sessions s "
            'JOIN users u ON u.name=s."user" WHERE s.session_hash=?', (_sha256(session_id),)).fetchone()
        if row is None or row[1] <= time.time():
            return None
        return Principal(row[2], row[3], row[4], kind="session", session_id=session_id, csrf_token=row[0])

    def close_session(self, session_id: str) -> None:
        """End a session server-side (its cookie is refused from now on)."""
        self._db.execute("DELETE FROM sessions WHERE session_hash=?", (_sha256(session_id),))


def _hash(password: object) -> str:
    try:
        return hash_password(password)  # type: ignore[arg-type]  # checked there
    except PasswordPolicyError as exc:
        raise ApiError(400, str(exc)) from None
