"""The catalog's schema as versioned migrations (PRAGMA user_version on SQLite, public.flowctl_schema on PostgreSQL)."""

from __future__ import annotations

from hub_store.sql.migrate import Migrations

SCHEMA = """
CREATE TABLE services (
    service_id   TEXT PRIMARY KEY,
    service_name TEXT NOT NULL,
    service_type TEXT NOT NULL,
    port         INTEGER,
    description  TEXT NOT NULL
);
CREATE TABLE versions (
    service_id      TEXT NOT NULL REFERENCES services(service_id),
    version         TEXT NOT NULL,
    sha256          TEXT NOT NULL,
    size_bytes      INTEGER NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    unpacked_size   INTEGER NOT NULL,
    file_count      INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    published_at    TEXT NOT NULL,
    signature       BLOB,
    signer          TEXT,
    stable          INTEGER NOT NULL,
    yanked          INTEGER NOT NULL DEFAULT 0,
    zip_sha256      TEXT,
    zip_size        INTEGER,
    PRIMARY KEY (service_id, version)
);
CREATE TABLE files (
    service_id TEXT NOT NULL,
    version    TEXT NOT NULL,
    path       TEXT NOT NULL,
    size       INTEGER NOT NULL,
    mode       INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    PRIMARY KEY (service_id, version, path),
    FOREIGN KEY (service_id, version) REFERENCES versions(service_id, version)
);
CREATE INDEX files_by_digest ON files(sha256);
CREATE TABLE models (
    model_id      TEXT NOT NULL,
    model_version TEXT NOT NULL,
    model_type    TEXT NOT NULL,
    service_id    TEXT NOT NULL,
    version       TEXT NOT NULL,
    path          TEXT NOT NULL,
    PRIMARY KEY (model_id, model_version, service_id, version)
);
CREATE TABLE downloads (
    model_id TEXT PRIMARY KEY,
    count    INTEGER NOT NULL,
    last_at  TEXT NOT NULL
);
CREATE TABLE leases (
    lease_id   TEXT NOT NULL,
    digest     TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (lease_id, digest)
);
"""
MIGRATIONS = Migrations("catalog", (SCHEMA,))
SCHEMA_VERSION = MIGRATIONS.latest
