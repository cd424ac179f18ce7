"""A restarted control plane waits for its nodes: replicas stay on a node that has not
reconnected yet for the lost-node timeout (counted from the plane's start), then move."""

import pytest
import trio

from runtime.control.messages import Heartbeat, Hello, ReplicaReport
from runtime.scheduler.reconcile import Deployment, Replica
from runtime.scheduler.service import Scheduler
from runtime.scheduler.store import ClusterStore
from tests.runtime.scheduler.test_cluster import resolve

LOST_AFTER = 15.0


def stored_cluster(tmp_path):
    """A cluster.db as a plane left it: one deployment, its replicas on a remote node."""
    store = ClusterStore(tmp_path / "cluster.db")
    store.save_node("id-remote", "remote", {})
    store.save_deployment(Deployment("echo", "1.0.0", 2))
    store.save_replicas([Replica("r1", "echo", "1.0.0", "id-remote", 1, "ready"),
                         Replica("r2", "echo", "1.0.0", "id-remote", 1, "ready")])
    return store


def hello(name):
    return Hello(node_id=f"id-{name}", name=name, agent_version="0", cpu_count=2, ram_mb=8000)


async def keep_alive(scheduler, node_id, epoch):
    """The node's heartbeats, so the registry keeps it ready."""
    seq = 0
    while True:
        seq += 1
        scheduler.registry.heartbeat(node_id, epoch, Heartbeat(seq=seq, free_ram_mb=8000))
        await trio.sleep(1)


@pytest.fixture
async def store(tmp_path):
    store = stored_cluster(tmp_path)
    yield store
    store.close()


@pytest.fixture
async def scheduler(store):
    scheduler = Scheduler(store, resolve, hub_url="http://127.0.0.1:1", lost_after=LOST_AFTER)
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        scheduler.test_nursery = nursery
        yield scheduler
        nursery.cancel_scope.cancel()


def placed(scheduler):
    return sorted((r.replica_id, r.node_id, r.attempt) for r in scheduler._replicas)


async def test_replicas_wait_for_their_node_for_the_lost_node_timeout_after_a_restart(
        autojump_clock, scheduler):
    start = trio.current_time()
    nursery = scheduler.test_nursery
    # The plane's own node is back at once; the remote one is still reconnecting.
    nursery.start_soon(keep_alive, scheduler, "id-local", scheduler.registry.connect(hello("local")))
    await trio.sleep(LOST_AFTER - 1)
    assert placed(scheduler) == [("r1", "id-remote", 1), ("r2", "id-remote", 1)]
    (dep,) = scheduler.status()["deployments"]
    assert [r["state"] for r in dep["replicas"]] == ["pending", "pending"]
    assert "waiting up to" in dep["unplaced"] and "remote to reconnect" in dep["unplaced"]

    await trio.sleep_until(start + LOST_AFTER + 2)  # the remote node never came back
    assert placed(scheduler) == [("r1", "id-local", 2), ("r2", "id-local", 2)]


async def test_a_node_that_reconnects_in_time_keeps_its_replicas(autojump_clock, scheduler):
    nursery = scheduler.test_nursery
    nursery.start_soon(keep_alive, scheduler, "id-local", scheduler.registry.connect(hello("local")))
    await trio.sleep(LOST_AFTER / 2)
    epoch = scheduler.registry.connect(hello("remote"))
    nursery.start_soon(keep_alive, scheduler, "id-remote", epoch)
    for replica_id in ("r1", "r2"):
        scheduler.report("id-remote", ReplicaReport(replica_id, "echo", "1.0.0", 1, "ready"))
    await trio.sleep(LOST_AFTER * 2)
    assert placed(scheduler) == [("r1", "id-remote", 1), ("r2", "id-remote", 1)]
    (dep,) = scheduler.status()["deployments"]
    assert dep["unplaced"] is None


async def test_worker_log_tails_are_kept_only_from_a_replicas_own_node_and_placement(autojump_clock, scheduler):
    nursery = scheduler.test_nursery
    nursery.start_soon(keep_alive, scheduler, "id-local", scheduler.registry.connect(hello("local")))
    start = trio.current_time()
    scheduler.note_logs("id-remote", {"r1": ("listening",), "nope": ("not a replica",)})
    scheduler.note_logs("id-local", {"r2": ("<b>not yours</b>",)})  # r2 runs on id-remote
    assert scheduler.worker_log("r1") == ("listening",)
    assert scheduler.worker_log("r2") == () and scheduler.worker_log("nope") == ()
    await trio.sleep_until(start + LOST_AFTER + 2)  # the remote node never came back: r1 moved
    assert placed(scheduler)[0] == ("r1", "id-local", 2)
    assert scheduler.worker_log("r1") == ()  # the old node's words are not the new attempt's
    scheduler.note_logs("id-local", {"r1": ("started again",)})
    assert scheduler.worker_log("r1") == ("started again",)
