"""The SQL layer across a PostgreSQL restart: the pool drops dead connections, the next call works."""

import sqlite3

import pytest

from hub_store import sql
from runtime.gateway.keys import KeyStore

pytestmark = pytest.mark.engines


def test_stores_work_again_after_postgresql_restarts(postgres_server, postgres_url):
    state = sql.State.parse(postgres_url + "?pool_max=4&pool_timeout=10")
    store = KeyStore(state)
    try:
        store.create_tenant("acme")
        key, _ = store.create_key("acme")
        for _ in range(4):  # every pooled connection is used, then all die with the server
            assert store.principal(key).tenant == "acme"
        postgres_server.restart()
        failures = 0
        for _ in range(8):  # at most the call caught mid-flight fails, and only as a database error
            try:
                assert store.principal(key).tenant == "acme"
            except sqlite3.OperationalError:
                failures += 1
        assert failures <= 1
        assert store.principal(key).tenant == "acme"
        store.create_tenant("after")  # writes too
        assert [t["name"] for t in store.tenants()] == ["acme", "after"]
    finally:
        store.close()
        state.close()
