"""The key store on both state engines: tenants, keys, revocation, usage, a deleted tenant's keys."""

import pytest

from runtime.dispatch.limits import Limits
from runtime.gateway.keys import KeyStore, KeyStoreError


@pytest.fixture
def store(state):
    s = KeyStore(state)
    yield s
    s.close()


def test_keys_tenants_and_limits(store):
    store.create_tenant("acme", Limits(rpm=600, max_sessions=3))
    with pytest.raises(KeyStoreError) as taken:
        store.create_tenant("acme")
    assert taken.value.status == 409
    key, record = store.create_key("acme", name="ci", limits=Limits(rpm=60), models=("echo",), expires_at=None)
    who = store.principal(key)
    assert who.tenant == "acme" and who.key_limits.rpm == 60 and who.models == ("echo",)
    assert who.tenant_limits == Limits(rpm=600, max_sessions=3)
    assert store.update_tenant("acme", {"max_sessions": 0, "rpm": None})["tpm"] is None
    assert store.principal(key).tenant_limits == Limits(max_sessions=0)
    assert [t["keys"] for t in store.tenants()] == [1]
    assert store.principal(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    store.revoke(record.key_id)
    assert store.principal(key) is None and store.key(record.key_id).revoked_at is not None


def test_a_deleted_tenant_revokes_its_keys_which_stay_listed(store):
    store.create_tenant("acme")
    key, record = store.create_key("acme")
    assert store.delete_tenant("acme") == [record.key_id]
    assert store.principal(key) is None
    assert [k.key_id for k in store.keys("acme")] == [record.key_id]
    with pytest.raises(KeyStoreError):
        store.tenant("acme")
    with pytest.raises(KeyStoreError):
        store.create_key("acme")


def test_usage_adds_up_per_day_key_model_and_via(store):
    store.create_tenant("acme")
    store.add_usage([("2026-11-30", "acme", "k1", "echo", "http", 1, 10, 20),
                     ("2026-11-30", "acme", "k1", "echo", "session", 1, 1, 2, 1.5)])
    store.add_usage([("2026-11-30", "acme", "k1", "echo", "http", 2, 5, 5)])
    assert [(u["via"], u["requests"], u["prompt_tokens"], u["audio_seconds"]) for u in store.usage("acme")] == [
        ("http", 3, 15, 0.0), ("session", 1, 1, 1.5)]


def test_a_reopened_store_keeps_its_keys(state):
    first = KeyStore(state)
    first.create_tenant("acme")
    key, _ = first.create_key("acme")
    first.close()
    again = KeyStore(state)
    assert again.principal(key).tenant == "acme"
    again.close()
