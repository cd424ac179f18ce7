"""The jobs database's tables (`DATA_DIR/jobs.db`); `runtime.jobs.store` reads and writes them.

`runs` has `UNIQUE (job_id, fire_time)`: one scheduled fire, one run, whoever inserts it.
"""

from hub_store.sql import Migrations, Tx, add_rowid, split_statements

DB_NAME = "jobs.db"
SCHEMA = """
CREATE TABLE jobs (
    job_id        TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    name          TEXT NOT NULL,
    definition    TEXT NOT NULL,
    version       INTEGER NOT NULL,
    suspended     INTEGER NOT NULL,
    planned_until INTEGER NOT NULL,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    UNIQUE (tenant, name)
);
CREATE TABLE runs (
    run_id      TEXT PRIMARY KEY,
    job_id      TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    job_name    TEXT NOT NULL,
    fire_time   INTEGER,
    due_at      REAL NOT NULL,
    cause       TEXT NOT NULL,
    state       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    params      TEXT NOT NULL,
    definition  TEXT NOT NULL,
    version     INTEGER NOT NULL,
    created_at  REAL NOT NULL,
    started_at  REAL,
    finished_at REAL,
    UNIQUE (job_id, fire_time)
);
CREATE INDEX runs_by_state ON runs (state, due_at);
CREATE INDEX runs_by_job ON runs (job_id, created_at);
CREATE INDEX runs_by_tenant ON runs (tenant, job_name, due_at);
CREATE TABLE steps (
    run_id   TEXT NOT NULL,
    step     TEXT NOT NULL,
    state    TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    reason   TEXT NOT NULL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE attempts (
    run_id      TEXT NOT NULL,
    step        TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    state       TEXT NOT NULL,
    epoch       INTEGER,
    node        TEXT,
    exit_code   INTEGER,
    reason      TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    late_result TEXT,
    PRIMARY KEY (run_id, step, attempt)
);
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    expires_at REAL NOT NULL
);
"""


def _schema_1(tx: Tx) -> None:
    for statement in split_statements(SCHEMA):
        tx.execute(tx.ddl(statement))
    if tx.dialect == "postgresql":  # SQLite's implicit rowid (steps and attempts list in insertion order)
        add_rowid(tx, "steps", "attempts")


MIGRATIONS = Migrations("jobs", (_schema_1,))
SCHEMA_VERSION = MIGRATIONS.latest
