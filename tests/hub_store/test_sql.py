"""The SQL layer on both engines: sqlite3's surface, placeholders, transactions, migrations, errors."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from hub_store import sql
from hub_store.sql.dialect import postgres_sql

MIGRATIONS = sql.Migrations("things", (
    """CREATE TABLE things (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
                            size INTEGER NOT NULL, at REAL NOT NULL, data BLOB);
       CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    ("ALTER TABLE things ADD COLUMN flag INTEGER NOT NULL DEFAULT 0",),
))


@pytest.fixture
def db(state_url):
    state = sql.State.parse(state_url)
    database = sql.open_store(state, MIGRATIONS, "things.db")
    yield database
    database.close()
    state.close()


def test_placeholders_are_translated_outside_quotes_and_comments():
    assert postgres_sql("SELECT '?', \"a?\", ? -- why?\n, x % 2") == "SELECT '?', \"a?\", %s -- why?\n, x %% 2"
    assert postgres_sql("INSERT OR IGNORE INTO t VALUES (?)") == "INSERT INTO t VALUES (%s) ON CONFLICT DO NOTHING"
    with pytest.raises(ValueError, match="ON CONFLICT"):
        postgres_sql("INSERT OR REPLACE INTO t VALUES (?)")


def test_rows_counts_and_types(db):
    big = 5 * 2**32  # sizes past 32 bits: INTEGER is BIGINT on PostgreSQL
    rows = db.execute("INSERT INTO things (name, size, at, data, flag) VALUES (?, ?, ?, ?, ?) RETURNING id",
                      ("a", big, 1700000000.123456, b"\x00\xff", True)).fetchall()
    assert len(rows) == 1 and isinstance(rows[0][0], int)
    db.executemany("INSERT INTO things (name, size, at) VALUES (?, ?, ?)", [("b", 1, 2.5), ("c", 2, 3.5)])
    assert db.execute("SELECT name, size, at, data, flag FROM things WHERE name=?", ("a",)).fetchone() == (
        "a", big, 1700000000.123456, b"\x00\xff", 1)
    assert db.execute("SELECT SUM(size), COUNT(*) FROM things").fetchone() == (big + 3, 3)
    assert [r[0] for r in db.execute("SELECT name FROM things ORDER BY name")] == ["a", "b", "c"]
    assert db.execute("UPDATE things SET size=size+1 WHERE size < ?", (10,)).rowcount == 2
    assert db.execute("SELECT name FROM things WHERE name='zz'").fetchone() is None


def test_upsert_and_ignore_on_both_engines(db):
    db.execute(sql.upsert("meta", ("key", "value"), ("key",)), ("k", "1"))
    db.execute(sql.upsert("meta", ("key", "value"), ("key",)), ("k", "2"))
    db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", ("k", "3"))
    assert db.execute("SELECT value FROM meta").fetchall() == [("2",)]


def test_integrity_error_is_sqlite3s_class_and_rolls_back(db):
    db.execute("INSERT INTO things (name, size, at) VALUES ('x', 1, 0)")
    with pytest.raises(sqlite3.IntegrityError), db.transaction() as tx:
        tx.execute("INSERT INTO things (name, size, at) VALUES ('y', 1, 0)")
        tx.execute("INSERT INTO things (name, size, at) VALUES ('x', 1, 0)")
    assert db.execute("SELECT COUNT(*) FROM things").fetchone() == (1,)


def test_a_bad_statement_is_a_sqlite3_error(db):
    with pytest.raises(sqlite3.Error):
        db.execute("SELECT nope FROM things")
    assert db.execute("SELECT COUNT(*) FROM things").fetchone() == (0,)  # the connection still works


def test_immediate_transactions_serialise_read_then_write(db):
    db.execute("INSERT INTO meta VALUES ('n', '0')")

    def bump():
        for _ in range(20):
            with db.transaction() as tx:
                (n,) = tx.execute("SELECT value FROM meta WHERE key='n'").fetchone()
                tx.execute("UPDATE meta SET value=? WHERE key='n'", (str(int(n) + 1),))

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert db.execute("SELECT value FROM meta WHERE key='n'").fetchone() == ("80",)


def test_migrations_are_versioned_and_reapplied_only_when_missing(state_url):
    state = sql.State.parse(state_url)
    try:
        first = state.open("things", "things.db")
        assert sql.migrate(first, sql.Migrations("things", MIGRATIONS.steps[:1])) == (0, 1)
        assert sql.migrate(first, MIGRATIONS) == (1, 2)
        assert sql.migrate(first, MIGRATIONS) == (2, 2)
        first.execute("INSERT INTO things (name, size, at, flag) VALUES ('a', 1, 0, 1)")
        with pytest.raises(sql.SchemaTooNew, match=r"things store was written by a newer flowctl \(schema 2 > 1\)"):
            sql.open_store(state, sql.Migrations("things", MIGRATIONS.steps[:1]), "things.db")
        first.close()
    finally:
        state.close()


def test_stores_do_not_share_tables(state_url):
    state = sql.State.parse(state_url)
    try:
        one = sql.open_store(state, sql.Migrations("one", ("CREATE TABLE meta (k TEXT)",)), "one.db")
        two = sql.open_store(state, sql.Migrations("two", ("CREATE TABLE meta (k TEXT)",)), "two.db")
        one.execute("INSERT INTO meta VALUES ('from one')")
        assert two.execute("SELECT COUNT(*) FROM meta").fetchone() == (0,)
        one.close()
        two.close()
    finally:
        state.close()


@pytest.mark.parametrize("url, message", [
    ("mysql://x/y", "scheme must be sqlite:// or postgresql://"),
    ("sqlite://host/dir", "three slashes"),
    ("postgresql://u:secret@h:5432/", "names no database"),
    ("postgresql://u@h/db?pool_max=zero", "pool_max and pool_timeout must be numbers"),
])
def test_bad_state_urls_are_one_line_errors(url, message):
    with pytest.raises(sql.StateError, match=message) as caught:
        sql.State.parse(url)
    assert "secret" not in str(caught.value) and "\n" not in str(caught.value)


def test_unreachable_postgresql_is_a_one_line_state_error():
    with socket_port() as port:
        state = sql.State.parse(f"postgresql://flow:pw@127.0.0.1:{port}/db?pool_timeout=2")
        with pytest.raises(sql.StateError, match="cannot connect to the state database") as caught:
            state.open("x", "x.db")
    assert "pw@" not in str(caught.value)


class socket_port:
    """A port nothing listens on, held bound (not listening) for the test."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.sock.close()


def test_a_nested_transaction_is_a_savepoint_and_reads_join_the_open_transaction(db):
    with db.transaction() as tx:
        tx.execute("INSERT INTO meta VALUES ('outer', '1')")
        assert db.execute("SELECT value FROM meta WHERE key='outer'").fetchone() == ("1",)  # same thread: joins
        with pytest.raises(sqlite3.IntegrityError), db.transaction() as inner:
            inner.execute("INSERT INTO meta VALUES ('inner', '1')")
            inner.execute("INSERT INTO meta VALUES ('outer', '2')")
        with db.transaction() as inner:
            inner.execute("INSERT INTO meta VALUES ('kept', '1')")
    assert db.execute("SELECT key FROM meta ORDER BY key").fetchall() == [("kept",), ("outer",)]


def test_scalar_max_and_min_mean_the_same_on_both(db):
    db.execute("INSERT INTO things (name, size, at) VALUES ('a', 5, 0)")
    db.execute("UPDATE things SET size=MAX(size, ?) WHERE name='a'", (9,))
    db.execute("UPDATE things SET at=MIN(at, ?) WHERE name='a'", (-1.5,))
    assert db.execute("SELECT size, at, MAX(size) FROM things GROUP BY size, at").fetchone() == (9, -1.5, 9)
