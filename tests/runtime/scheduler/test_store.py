import sqlite3

import pytest

from hub_store import sql
from packer.manifest import Resources
from runtime.scheduler.reconcile import Deployment, Replica
from runtime.scheduler.store import (
    _CREDENTIALS,
    _SCHEMA,
    MIGRATIONS,
    ClusterStore,
    CredentialError,
    EnrollError,
    TokenError,
)


@pytest.fixture
def store(state):
    s = ClusterStore(state)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path):
    s = ClusterStore(tmp_path / "cluster.db")
    yield s
    s.close()


def test_state_survives_a_restart(state):
    path = state
    first = ClusterStore(path)
    cluster_id = first.cluster_id()
    dep = Deployment("echo", "1.0.0", 2, Resources(ram_mb=64), ("echo",), ("alpha",))
    first.save_deployment(dep)
    first.save_replicas([Replica("r1", "echo", "1.0.0", "n1", 3, "ready")])
    first.save_node("n1", "alpha", {"cpu_count": 2})
    first.close()
    again = ClusterStore(path)
    assert again.cluster_id() == cluster_id
    assert again.deployments() == [dep]
    assert again.replicas() == [Replica("r1", "echo", "1.0.0", "n1", 3, "ready")]
    assert [row[:2] for row in again.known_nodes()] == [("n1", "alpha")]
    again.close()


def test_join_tokens_are_checked_and_revocable(store):
    record, token = store.create_token("laptop")
    assert token.startswith("fjt_") and record.token_id in token
    assert store.check_token(token).name == "laptop"
    assert "secret" not in repr(store.tokens())
    for bad in ["", "fjt_", token[:-1] + ("A" if token[-1] != "A" else "B"), "fjt_nope_x", "bearer " + token]:
        with pytest.raises(TokenError):
            store.check_token(bad)
    assert store.revoke_token("laptop") == [record.token_id]
    with pytest.raises(TokenError, match="revoked or expired"):
        store.check_token(token)


def test_expired_token_is_refused(store):
    _, token = store.create_token("short", ttl_s=-1)
    with pytest.raises(TokenError, match="revoked or expired"):
        store.check_token(token)


def test_secret_is_stored_hashed(sqlite_store, tmp_path):
    store = sqlite_store
    _, token = store.create_token("x")
    secret = token.removeprefix("fjt_").partition("_")[2]
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("cluster.db*"))  # the WAL too
    assert len(on_disk) > 0 and secret.encode() not in on_disk


def test_undeploy(store):
    store.save_deployment(Deployment("echo", "1.0.0", 1))
    assert store.delete_deployment("echo")
    assert not store.delete_deployment("echo")
    assert store.deployments() == []


def test_a_node_id_is_bound_at_its_first_join(store):
    laptop, laptop_token = store.create_token("laptop")
    other, _ = store.create_token("other")
    credential = store.enroll_node("n1", laptop.token_id)
    assert credential.startswith("fnc_")
    assert store.check_credential(credential).node_id == "n1"
    assert store.check_credential(credential).token_name == "laptop"
    # No token claims an enrolled id again, the one that enrolled it included.
    for token_id in (laptop.token_id, other.token_id):
        with pytest.raises(EnrollError, match="node id 'n1' is already enrolled"):
            store.enroll_node("n1", token_id)
    store.enroll_node("n2", laptop.token_id)  # one token enrolls many nodes
    assert store.enrolled_nodes() == {laptop.token_id: ["n1", "n2"]}
    for bad in ["", "fnc_", credential[:-1] + ("A" if credential[-1] != "A" else "B"), laptop_token]:
        with pytest.raises(CredentialError):
            store.check_credential(bad)
    with pytest.raises(EnrollError, match="must be 1-64"):
        store.enroll_node("../x", laptop.token_id)


def test_revoking_a_token_revokes_the_credentials_it_issued(store):
    laptop, _ = store.create_token("laptop")
    other, _ = store.create_token("other")
    mine = store.enroll_node("n1", laptop.token_id)
    theirs = store.enroll_node("n2", other.token_id)
    assert store.revoke_token("laptop") == [laptop.token_id]
    with pytest.raises(CredentialError, match="credential of node 'n1' was revoked .*'laptop'"):
        store.check_credential(mine)
    assert store.check_credential(theirs).node_id == "n2"
    with pytest.raises(TokenError, match="revoked or expired"):
        store.enroll_node("n3", laptop.token_id)
    with pytest.raises(EnrollError):  # a revoked node's id stays taken
        store.enroll_node("n1", other.token_id)
    assert store.enrolled_nodes() == {other.token_id: ["n2"]}


def test_an_expired_token_enrolls_no_more_but_its_nodes_stay(store):
    record, _ = store.create_token("short", ttl_s=3600)
    credential = store.enroll_node("n1", record.token_id)
    with store._tx() as db:
        db.execute("UPDATE join_tokens SET expires_at=1")
    assert store.check_credential(credential).node_id == "n1"
    with pytest.raises(TokenError, match="revoked or expired"):
        store.enroll_node("n2", record.token_id)


def test_a_schema_1_store_gains_credentials_and_its_nodes_enroll_at_next_join(tmp_path):
    path = tmp_path / "cluster.db"
    db = sqlite3.connect(path)
    for statement in filter(str.strip, _SCHEMA.split(";")):
        db.execute(statement)
    db.execute("INSERT INTO meta VALUES ('cluster_id', 'c1')")
    db.execute("INSERT INTO nodes VALUES ('n1', 'desk', 0, 0, '{}')")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    store = ClusterStore(path)
    try:
        record, _ = store.create_token("desk")
        assert store.check_credential(store.enroll_node("n1", record.token_id)).node_id == "n1"
        assert store.cluster_id() == "c1"
    finally:
        store.close()


def test_credentials_are_stored_hashed(sqlite_store, tmp_path):
    store = sqlite_store
    record, _ = store.create_token("x")
    credential = store.enroll_node("n1", record.token_id)
    secret = credential.removeprefix("fnc_").partition("_")[2]
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("cluster.db*"))
    assert secret.encode() not in on_disk


def test_port_track_and_gpus_survive_a_restart(state):
    first = ClusterStore(state)
    dep = Deployment("nmt", "1.0.0", 1, Resources(vram_mb=100, gpu="required"), port=5008, track="stable")
    first.save_deployment(dep)
    first.save_replicas([Replica("r1", "nmt", "1.0.0", "n1", 1, "ready", gpus=(1, 3))])
    first.close()
    again = ClusterStore(state)
    assert again.deployments() == [dep] and again.replicas()[0].gpus == (1, 3)
    again.close()


def test_a_schema_2_store_gains_port_track_and_gpus(tmp_path):
    old = tmp_path / "old.db"
    db = sqlite3.connect(old)
    for statement in filter(str.strip, _SCHEMA.split(";")):
        db.execute(statement)
    db.execute(_CREDENTIALS)
    db.execute("INSERT INTO meta VALUES ('cluster_id', 'c1')")
    db.execute("INSERT INTO deployments VALUES ('echo', '1.0.0', 2, '[]', '{}', '[]', 0)")
    db.execute("INSERT INTO replicas VALUES ('r1', 'echo', '1.0.0', 'n1', 1, 'ready')")
    db.execute("PRAGMA user_version=2")
    db.commit()
    db.close()
    store = ClusterStore(old)
    try:
        assert store.deployments() == [Deployment("echo", "1.0.0", 2)]  # no port, pinned to its version
        assert store.replicas() == [Replica("r1", "echo", "1.0.0", "n1", 1, "ready")]
    finally:
        store.close()


def test_a_newer_schema_is_refused_in_one_line(state):
    ClusterStore(state).close()
    newer = sql.Migrations("cluster", (*MIGRATIONS.steps, "CREATE TABLE later (x TEXT)"))
    sql.open_store(state, newer, "cluster.db").close()
    with pytest.raises(sql.SchemaTooNew, match=r"^the cluster store was written by a newer flowctl \(schema 4 > 3\)"):
        ClusterStore(state)
