"""The scheduler's durable state: cluster id, join tokens, node credentials, nodes,
deployments, replicas.

A restarted control plane reads it back and picks up where it was; nodes simply
reconnect. Synchronous and thread-safe; the runtime calls it through
`trio.to_thread.run_sync`. On SQLite it is its own file (`cluster.db`) beside the hub's
catalog so the roles can run in separate processes; on PostgreSQL the schema `cluster`
of the state database, shared by every plane. Nothing is cached here: every call reads
the database (the Scheduler's in-memory view is the Scheduler's business).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hub_store import make_private_database, sql
from packer.manifest import Resources
from runtime.errors import FlowError
from runtime.scheduler.reconcile import Deployment, Replica

TOKEN_PREFIX = "fjt_"
CREDENTIAL_PREFIX = "fnc_"
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE join_tokens (
    token_id   TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL,
    name       TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL
);
CREATE TABLE nodes (
    node_id    TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen  REAL NOT NULL,
    hello      TEXT NOT NULL
);
CREATE TABLE deployments (
    service_id TEXT PRIMARY KEY,
    version    TEXT NOT NULL,
    replicas   INTEGER NOT NULL,
    nodes      TEXT NOT NULL,
    resources  TEXT NOT NULL,
    models     TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE replicas (
    replica_id TEXT PRIMARY KEY,
    service_id TEXT NOT NULL,
    version    TEXT NOT NULL,
    node_id    TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    state      TEXT NOT NULL
);
"""
# Schema 2: a node id is bound at its first join to the join token that enrolled it.
_CREDENTIALS = """
CREATE TABLE node_credentials (
    node_id       TEXT PRIMARY KEY,
    credential_id TEXT NOT NULL UNIQUE,
    secret_sha256 TEXT NOT NULL,
    token_id      TEXT NOT NULL,
    created_at    REAL NOT NULL,
    revoked_at    REAL
)
"""
# Schema 3: a deployment's declared port and tracked channel; a replica's GPU indexes.
_SCHEMA_3 = (
    "ALTER TABLE deployments ADD COLUMN port INTEGER",
    "ALTER TABLE deployments ADD COLUMN track TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE replicas ADD COLUMN gpus TEXT NOT NULL DEFAULT '[]'",
)


def _schema_1(tx: sql.Tx) -> None:
    for statement in filter(str.strip, _SCHEMA.split(";")):
        tx.execute(tx.ddl(statement))
    tx.execute("INSERT INTO meta VALUES ('cluster_id', ?)", (secrets.token_hex(8),))


# Nodes known before schema 2 have no credential: each enrolls at its next join.
MIGRATIONS = sql.Migrations("cluster", (_schema_1, _CREDENTIALS, _SCHEMA_3))
SCHEMA_VERSION = MIGRATIONS.latest


class TokenError(FlowError):
    """A join token (or a node credential) is unknown, malformed, revoked or expired."""


class CredentialError(TokenError):
    """A node credential is unknown, malformed or revoked."""


class EnrollError(FlowError):
    """A join token cannot enroll this node id (it is taken, or not a valid id)."""


@dataclass(frozen=True)
class JoinToken:
    """A join token's public record (the secret itself is never stored)."""

    token_id: str
    name: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None

    @property
    def active(self) -> bool:
        """Neither revoked nor expired."""
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > time.time())


@dataclass(frozen=True)
class NodeCredential:
    """An enrolled node's credential record: the one node id it may connect as."""

    node_id: str
    token_id: str
    token_name: str


class ClusterStore:
    """Durable scheduler state; every method is one transaction."""

    def __init__(self, where: Path | sql.State):
        """Open (and migrate) the store: a SQLite file path, or the plane's state."""
        path = where if isinstance(where, Path) else where.sqlite_path("cluster.db")
        self.path = path
        if path is not None:
            make_private_database(path)  # join-token hashes: owner-only, like its -wal/-shm
        self._db = sql.open_store(where, MIGRATIONS, "cluster.db")

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sql.Tx]:
        with self._db.transaction() as tx:
            yield tx

    def cluster_id(self) -> str:
        """This control plane's stable identity (the handshake returns it)."""
        return self._db.execute("SELECT value FROM meta WHERE key='cluster_id'").fetchone()[0]

    # -- join tokens ------------------------------------------------------------------------

    def create_token(self, name: str, *, ttl_s: float | None = None) -> tuple[JoinToken, str]:
        """A new join token; the secret string is returned once and stored only hashed."""
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        now = time.time()
        record = JoinToken(token_id, name, now, now + ttl_s if ttl_s else None, None)
        with self._tx() as db:
            db.execute("INSERT INTO join_tokens VALUES (?, ?, ?, ?, ?, NULL)",
                       (token_id, _digest(secret), name, now, record.expires_at))
        return record, f"{TOKEN_PREFIX}{token_id}_{secret}"

    def tokens(self) -> list[JoinToken]:
        """Every join token, newest first."""
        rows = self._db.execute(
            "SELECT token_id, name, created_at, expires_at, revoked_at FROM join_tokens "
            "ORDER BY created_at DESC").fetchall()
        return [JoinToken(*row) for row in rows]

    def revoke_token(self, token_id_or_name: str) -> list[str]:
        """Revoke tokens by id or name, and the node credentials they issued; returns their ids."""
        now = time.time()
        with self._tx() as db:
            ids = [row[0] for row in db.execute(
                "SELECT token_id FROM join_tokens WHERE (token_id=? OR name=?) AND revoked_at IS NULL",
                (token_id_or_name, token_id_or_name))]
            for token_id in ids:
                db.execute("UPDATE join_tokens SET revoked_at=? WHERE token_id=?", (now, token_id))
                db.execute("UPDATE node_credentials SET revoked_at=? WHERE token_id=? AND revoked_at IS NULL",
                           (now, token_id))
        return ids

    def check_token(self, token: str) -> JoinToken:
        """The active token matching `token`; raise TokenError otherwise (constant-time compare)."""
        if not token.startswith(TOKEN_PREFIX) or token.count("_") < 2:
            raise TokenError("malformed join token")
        token_id, _, secret = token[len(TOKEN_PREFIX):].partition("_")
        row = self._db.execute(
            "SELECT secret_sha256, name, created_at, expires_at, revoked_at FROM join_tokens "
            "WHERE token_id=?", (token_id,)).fetchone()
        expected = row[0] if row else _digest("")
        if not hmac.compare_digest(expected, _digest(secret)) or row is None:
            raise TokenError("unknown join token")
        record = JoinToken(token_id, *row[1:])
        if not record.active:
            raise TokenError(f"join token {record.name!r} is revoked or expired")
        return record

    # -- node credentials -------------------------------------------------------------------

    def enroll_node(self, node_id: str, token_id: str) -> str:
        """Bind a new node id to the join token `token_id`; returns the node's credential, once.

        Raise EnrollError if the id is already enrolled (whatever the token) or malformed,
        TokenError if the token was revoked or expired since it was checked.
        """
        if not _NODE_ID.match(node_id):
            raise EnrollError(f"node id {node_id!r} must be 1-64 letters, digits, '.', '_' or '-'")
        credential_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT name, expires_at, revoked_at FROM join_tokens WHERE token_id=?",
                             (token_id,)).fetchone()
            if row is None or not JoinToken(token_id, row[0], 0.0, row[1], row[2]).active:
                raise TokenError(f"join token {row[0] if row else token_id!r} is revoked or expired")
            if db.execute("SELECT 1 FROM node_credentials WHERE node_id=?", (node_id,)).fetchone():
                raise EnrollError(
                    f"node id {node_id!r} is already enrolled; a join token cannot claim it. That node "
                    "connects with its own credential (DATA_DIR/node/node_credential); a new machine "
                    "must use a new id (remove the copied DATA_DIR/node/node_id)")
            db.execute("INSERT INTO node_credentials VALUES (?, ?, ?, ?, ?, NULL)",
                       (node_id, credential_id, _digest(secret), token_id, now))
        return f"{CREDENTIAL_PREFIX}{credential_id}_{secret}"

    def check_credential(self, credential: str) -> NodeCredential:
        """The enrolled node `credential` belongs to; raise CredentialError otherwise."""
        if not credential.startswith(CREDENTIAL_PREFIX) or credential.count("_") < 2:
            raise CredentialError("malformed node credential")
        credential_id, _, secret = credential[len(CREDENTIAL_PREFIX):].partition("_")
        row = self._db.execute(
            "SELECT c.secret_sha256, c.node_id, c.token_id, c.revoked_at, t.name FROM node_credentials c "
            "LEFT JOIN join_tokens t ON t.token_id = c.token_id WHERE c.credential_id=?",
            (credential_id,)).fetchone()
        expected = row[0] if row else _digest("")
        if not hmac.compare_digest(expected, _digest(secret)) or row is None:
            raise CredentialError("unknown node credential")
        _, node_id, token_id, revoked_at, token_name = row
        if revoked_at is not None:
            raise CredentialError(f"the credential of node {node_id!r} was revoked "
                                  f"(with its join token {token_name!r})")
        return NodeCredential(node_id, token_id, token_name or "")

    def enrolled_nodes(self) -> dict[str, list[str]]:
        """token_id -> the node ids it enrolled whose credential is not revoked."""
        rows = self._db.execute("SELECT token_id, node_id FROM node_credentials "
                                "WHERE revoked_at IS NULL ORDER BY node_id").fetchall()
        found: dict[str, list[str]] = {}
        for token_id, node_id in rows:
            found.setdefault(token_id, []).append(node_id)
        return found

    # -- nodes ------------------------------------------------------------------------------

    def save_node(self, node_id: str, name: str, hello: dict) -> None:
        """Remember a node that connected."""
        now = time.time()
        with self._tx() as db:
            db.execute("INSERT INTO nodes VALUES (?, ?, ?, ?, ?) ON CONFLICT(node_id) DO UPDATE "
                       "SET name=excluded.name, last_seen=excluded.last_seen, hello=excluded.hello",
                       (node_id, name, now, now, json.dumps(hello)))

    def known_nodes(self) -> list[tuple[str, str, float]]:
        """(node_id, name, last_seen) of every node ever seen."""
        return self._db.execute("SELECT node_id, name, last_seen FROM nodes ORDER BY name").fetchall()

    # -- deployments and replicas ----------------------------------------------------------

    def save_deployment(self, dep: Deployment) -> None:
        """Create or replace a deployment."""
        with self._tx() as db:
            db.execute(
                sql.upsert("deployments", ("service_id", "version", "replicas", "nodes", "resources", "models",
                                           "updated_at", "port", "track"), ("service_id",)),
                (dep.service_id, dep.version, dep.replicas, json.dumps(list(dep.nodes)),
                 json.dumps(dep.resources.__dict__), json.dumps(list(dep.models)), time.time(),
                 dep.port, dep.track))

    def delete_deployment(self, service_id: str) -> bool:
        """Remove a deployment; False if there was none."""
        with self._tx() as db:
            return db.execute("DELETE FROM deployments WHERE service_id=?", (service_id,)).rowcount > 0

    def deployments(self) -> list[Deployment]:
        """Every deployment, by service id."""
        rows = self._db.execute("SELECT service_id, version, replicas, nodes, resources, models, port, track "
                                "FROM deployments ORDER BY service_id").fetchall()
        return [Deployment(s, v, n, Resources(**json.loads(res)), tuple(json.loads(models)),
                           tuple(json.loads(nodes)), port, track)
                for s, v, n, nodes, res, models, port, track in rows]

    def save_replicas(self, replicas: Iterable[Replica]) -> None:
        """Replace the replica table with `replicas` (the result of a reconcile round)."""
        with self._tx() as db:
            db.execute("DELETE FROM replicas")
            db.executemany("INSERT INTO replicas (replica_id, service_id, version, node_id, attempt, state, gpus) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [(r.replica_id, r.service_id, r.version, r.node_id, r.attempt, r.state,
                             json.dumps(list(r.gpus))) for r in replicas])

    def replicas(self) -> list[Replica]:
        """Every replica as last saved."""
        rows = self._db.execute("SELECT replica_id, service_id, version, node_id, attempt, state, gpus "
                                "FROM replicas ORDER BY service_id, replica_id").fetchall()
        return [Replica(rid, sid, ver, node, attempt, state, tuple(json.loads(gpus)))
                for rid, sid, ver, node, attempt, state, gpus in rows]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
