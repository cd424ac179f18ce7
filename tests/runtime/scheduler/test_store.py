import pytest

from packer.manifest import Resources
from runtime.scheduler.reconcile import Deployment, Replica
from runtime.scheduler.store import ClusterStore, TokenError


@pytest.fixture
def store(tmp_path):
    s = ClusterStore(tmp_path / "cluster.db")
    yield s
    s.close()


def test_state_survives_a_restart(tmp_path):
    path = tmp_path / "cluster.db"
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
    assert store.revoke_token("laptop") == 1
    with pytest.raises(TokenError, match="revoked or expired"):
        store.check_token(token)


def test_expired_token_is_refused(store):
    _, token = store.create_token("short", ttl_s=-1)
    with pytest.raises(TokenError, match="revoked or expired"):
        store.check_token(token)


def test_secret_is_stored_hashed(store, tmp_path):
    _, token = store.create_token("x")
    secret = token.removeprefix("fjt_").partition("_")[2]
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("cluster.db*"))  # the WAL too
    assert len(on_disk) > 0 and secret.encode() not in on_disk


def test_undeploy(store):
    store.save_deployment(Deployment("echo", "1.0.0", 1))
    assert store.delete_deployment("echo")
    assert not store.delete_deployment("echo")
    assert store.deployments() == []
