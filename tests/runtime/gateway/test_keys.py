"""Keys, tenants, limits, usage and isolation through the real gateway, and the CLI."""

import json
import sqlite3
import time
from functools import partial

import pytest
import trio
from typer.testing import CliRunner

from flowctl.app import app as cli
from runtime.dispatch.limits import Limits
from runtime.gateway.keys import KeyStore, KeyStoreError
from tests.runtime.gateway.conftest import ADMIN, ADMIN_AUTH

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "one two"}]}


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def test_keys_are_stored_hashed_and_checked(tmp_path):
    store = KeyStore(tmp_path / "gateway.db")
    store.create_tenant("acme")
    key, record = store.create_key("acme")
    secret = key[len("fgk_") + 17:]
    assert key.startswith("fgk_") and len(secret) == 43  # 256 bits of secret
    assert store.principal(key).tenant == "acme"
    assert store.principal(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    store.close()  # checkpoints the WAL into the main file
    assert secret.encode() not in (tmp_path / "gateway.db").read_bytes()


# gateway.db as flowctl wrote it before schema 2 (no max_sessions, no via).
SCHEMA_1 = """
CREATE TABLE tenants (name TEXT PRIMARY KEY, rpm INTEGER, tpm INTEGER, max_concurrency INTEGER,
                      created_at REAL NOT NULL);
CREATE TABLE keys (key_id TEXT PRIMARY KEY, tenant TEXT NOT NULL REFERENCES tenants(name),
                   name TEXT NOT NULL, key_hash TEXT NOT NULL, rpm INTEGER, tpm INTEGER,
                   max_concurrency INTEGER, models TEXT NOT NULL, expires_at REAL,
                   created_at REAL NOT NULL, revoked_at REAL);
CREATE TABLE usage (day TEXT NOT NULL, tenant TEXT NOT NULL, key_id TEXT NOT NULL,
                    model TEXT NOT NULL, requests INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL,
                    completion_tokens INTEGER NOT NULL, PRIMARY KEY (day, tenant, key_id, model));
PRAGMA user_version=1;
"""


def test_a_schema_1_database_keeps_its_data_and_gains_max_sessions_and_via(tmp_path):
    path = tmp_path / "gateway.db"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_1)
    db.execute("INSERT INTO tenants VALUES ('acme', 600, NULL, 4, 1.0)")
    db.execute("INSERT INTO keys VALUES ('00000000000000aa', 'acme', 'k', 'h', 60, NULL, NULL, 'echo', NULL, 2.0, NULL)")
    db.execute("INSERT INTO usage VALUES ('2026-11-30', 'acme', '00000000000000aa', 'echo', 3, 10, 20)")
    db.commit()
    db.close()

    store = KeyStore(path)
    assert store.tenant("acme") == {"name": "acme", "rpm": 600, "tpm": None, "max_concurrency": 4,
                                    "max_sessions": None, "created_at": 1.0}
    assert store.key("00000000000000aa").limits.rpm == 60
    assert store.usage() == [{"day": "2026-11-30", "tenant": "acme", "key_id": "00000000000000aa", "model": "echo",
                              "via": "http", "requests": 3, "prompt_tokens": 10, "completion_tokens": 20,
                              "audio_seconds": 0.0}]
    # The same day, key and model, apart by via: two rows; the old one keeps adding up.
    store.add_usage([("2026-11-30", "acme", "00000000000000aa", "echo", "session", 1, 1, 2),
                     ("2026-11-30", "acme", "00000000000000aa", "echo", "http", 1, 1, 1)])
    assert [(u["via"], u["requests"]) for u in store.usage("acme")] == [("http", 4), ("session", 1)]
    assert store.update_tenant("acme", {"max_sessions": 2})["max_sessions"] == 2
    store.close()
    reopened = KeyStore(path)  # the current schema opens as it is
    assert reopened.tenant("acme")["max_sessions"] == 2 and len(reopened.usage()) == 2
    reopened.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 3


def test_tenant_limits_reach_the_principal_and_update_only_what_is_given(tmp_path):
    store = KeyStore(tmp_path / "gateway.db")
    store.create_tenant("acme", Limits(rpm=600, max_sessions=3))
    key, _ = store.create_key("acme")
    assert store.principal(key).tenant_limits == Limits(rpm=600, max_sessions=3)
    assert store.update_tenant("acme", {"max_sessions": 0, "rpm": None})["tpm"] is None
    assert store.principal(key).tenant_limits == Limits(max_sessions=0)
    for name, changes, status in [("nobody", {"rpm": 1}, 404), ("acme", {"name": "x"}, 400)]:
        with pytest.raises(KeyStoreError) as info:
            store.update_tenant(name, changes)
        assert info.value.status == status
    store.close()


async def test_revocation_is_immediate(cluster):
    key = await cluster.key()
    with trio.fail_after(20):
        assert (await cluster.client.post("/v1/chat/completions", headers=bearer(key), json=CHAT)).status_code == 200
        key_id = key.split("_")[1]
        assert (await cluster.client.delete(f"/api/gateway/keys/{key_id}", headers=ADMIN_AUTH)).status_code == 204
        r = await cluster.client.post("/v1/chat/completions", headers=bearer(key), json=CHAT)
    assert r.status_code == 401 and key not in r.text


async def test_a_missing_a_malformed_and_a_wrong_key_are_told_apart(cluster):
    key = await cluster.key()
    wrong = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
    with trio.fail_after(20):
        replies = [await cluster.client.get("/v1/models", headers=headers)
                   for headers in ({}, {"Authorization": "Bearer sk-not-ours"}, bearer(wrong))]
    assert [r.status_code for r in replies] == [401, 401, 401]
    messages = [r.json()["error"]["message"] for r in replies]
    assert "no API key" in messages[0] and "not a flowctl API key" in messages[1]
    assert "not valid" in messages[2] and len(set(messages)) == 3 and wrong not in replies[2].text


async def test_expired_key_and_model_allow_list(cluster):
    expired = await cluster.key(expires_at=time.time() - 1)
    limited = await cluster.key(models=["llama-*"])
    with trio.fail_after(20):
        assert (await cluster.client.get("/v1/models", headers=bearer(expired))).status_code == 401
        assert (await cluster.client.get("/v1/models", headers=bearer(limited))).json()["data"] == []
        r = await cluster.client.post("/v1/chat/completions", headers=bearer(limited), json=CHAT)
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"


async def test_rpm_limit_answers_429_with_retry_after(cluster):
    key = await cluster.key(rpm=1)
    with trio.fail_after(20):
        assert (await cluster.client.post("/v1/chat/completions", headers=bearer(key), json=CHAT)).status_code == 200
        r = await cluster.client.post("/v1/chat/completions", headers=bearer(key), json=CHAT)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert 'flowctl_gateway_rate_limited_total{tenant="acme",limit="rate_limit_exceeded"} 1' in \
        (await cluster.client.get("/metrics", headers=ADMIN_AUTH)).text


async def test_usage_is_recorded_per_tenant_and_key(cluster):
    a, b = await cluster.key("alpha"), await cluster.key("beta")
    with trio.fail_after(20):
        for key in (a, a, b):
            r = await cluster.client.post("/v1/chat/completions", headers=bearer(key), json=CHAT)
            assert r.status_code == 200
        usage = (await cluster.client.get("/api/gateway/usage?tenant=alpha", headers=ADMIN_AUTH)).json()
    assert [(u["tenant"], u["key_id"], u["requests"], u["completion_tokens"]) for u in usage] == \
        [("alpha", a.split("_")[1], 2, 4)]


# Cross-tenant attempts: a tenant's key never reaches the admin API, another tenant's objects or
# another tenant's usage; an unknown id and another tenant's id answer alike.
CROSS_TENANT = [
    ("GET", "/api/gateway/keys", "a", 401),
    ("GET", "/api/gateway/usage?tenant=beta", "a", 401),
    ("DELETE", "/api/gateway/keys/{b_id}", "a", 401),
    ("DELETE", "/api/gateway/tenants/beta", "a", 401),
    ("POST", "/api/gateway/keys", "a", 401),
    ("DELETE", "/api/gateway/keys/0000000000000000", "admin", 404),
    ("DELETE", "/api/gateway/tenants/nobody", "admin", 404),
]


@pytest.mark.parametrize(("method", "path", "as_", "status"), CROSS_TENANT)
async def test_cross_tenant_attempts(cluster, method, path, as_, status):
    a, b = await cluster.key("alpha"), await cluster.key("beta")
    headers = ADMIN_AUTH if as_ == "admin" else bearer(a)
    body = {"tenant": "beta"} if method == "POST" else None
    with trio.fail_after(20):
        r = await cluster.client.request(method, path.format(b_id=b.split("_")[1]), headers=headers, json=body)
        assert r.status_code == status, r.text
        assert a not in r.text and b not in r.text
        # beta's key still works afterwards.
        assert (await cluster.client.post("/v1/chat/completions", headers=bearer(b), json=CHAT)).status_code == 200


async def test_the_cli_manages_tenants_keys_and_usage(cluster):
    runner = CliRunner()
    env = {"FLOWCTL_SERVER": cluster.url, "FLOWCTL_TOKEN": ADMIN}

    async def flowctl(*args):
        result = await trio.to_thread.run_sync(partial(runner.invoke, cli, list(args), env=env))
        assert result.exit_code == 0, result.output
        return result.output

    with trio.fail_after(60):
        assert "tenant acme created" in await flowctl("tenants", "create", "acme", "--rpm", "600",
                                                      "--max-sessions", "5")
        updated = await flowctl("tenants", "update", "acme", "--max-sessions", "2", "--unset", "rpm")
        assert "tenant acme updated: max_sessions 2, rpm unlimited" in updated
        [tenant] = json.loads(await flowctl("tenants", "ls", "--json"))
        assert (tenant["rpm"], tenant["max_sessions"]) == (None, 2)
        assert "MAX_SESSIONS" in await flowctl("tenants", "ls")
        created = json.loads(await flowctl("keys", "create", "--tenant", "acme", "--rpm", "100", "--models",
                                           "echo", "--expires", "2999-01-01", "--json"))
        key = created["key"]
        plain = await trio.to_thread.run_sync(partial(runner.invoke, cli, ["keys", "create", "--tenant", "acme"],
                                                      env=env))
        assert plain.exit_code == 0 and plain.stdout.startswith("fgk_")
        assert len(plain.stdout.splitlines()) == 1 and "key id" in plain.stderr  # KEY=$(flowctl keys create ...)
        listed = await flowctl("keys", "ls", "--tenant", "acme")
        assert created["key_id"] in listed and key not in listed
        assert (await cluster.client.post("/v1/chat/completions", headers=bearer(key), json=CHAT)).status_code == 200
        usage = json.loads(await flowctl("usage", "--tenant", "acme", "--json"))
        assert (usage[0]["requests"], usage[0]["via"]) == (1, "http")
        assert "VIA" in await flowctl("usage", "--tenant", "acme")
        assert "acme" in await flowctl("tenants", "ls")
        assert "revoked" in await flowctl("keys", "revoke", created["key_id"])
        assert (await cluster.client.get("/v1/models", headers=bearer(key))).status_code == 401
        assert "removed" in await flowctl("tenants", "rm", "acme")
        for args, code, message in [(["tenants", "update", "acme"], 2, "give a limit to change"),
                                    (["tenants", "update", "acme", "--unset", "x"], 2, "not one of"),
                                    (["tenants", "update", "acme", "--rpm", "5"], 1, "no tenant 'acme'"),
                                    (["tenants", "update", "a", "--max-sessions", "-1"], 2, "--max-sessions")]:
            result = await trio.to_thread.run_sync(partial(runner.invoke, cli, args, env=env))
            assert result.exit_code == code and message in f"{result.output}{result.exception}", (args, result.output)
