"""Node-owned deployments (`flowctl run DIR`) as the plane serves them: announced over the real
serve_node on an in-memory connection, checked like a hostile node's input, refused on a
collision either way, routed while the node is connected, dropped when it is not."""

import json
import math
from functools import partial

import pytest
import trio

from runtime.control import messages
from runtime.control.messages import (
    Assign,
    Error,
    Heartbeat,
    Hello,
    Local,
    LocalDeployment,
    LocalVerdict,
    Welcome,
)
from runtime.scheduler.local_deployments import MAX_DETAIL, MAX_MODELS, MAX_PER_NODE
from runtime.scheduler.node_connection import serve_node
from runtime.scheduler.registry import NodeState
from runtime.scheduler.service import DeployConflict, Scheduler
from runtime.scheduler.store import ClusterStore
from runtime.tunnel import open_mux
from tests.polling import wait_until
from tests.runtime.scheduler.test_cluster import resolve
from tests.runtime.tunnel.test_mux import transport_pair


def dep(service_id="mine", models=("mine-model",), state="ready", **kw):
    return LocalDeployment(service_id, kw.pop("version", "1.0.0"), state, tuple(models), **kw)


@pytest.fixture
async def plane(tmp_path):
    store = ClusterStore(tmp_path / "cluster.db")
    scheduler = Scheduler(store, resolve, hub_url="http://hub.invalid", lost_after=15, heartbeat_interval=5)
    async with trio.open_nursery() as nursery:

        async def hold(node_end, *, task_status):
            async with open_mux(node_end, opener=True) as mux:
                task_status.started(mux)
                await trio.sleep_forever()

        async def connect(node_id, name):
            """A welcomed node's mux, open until the test ends."""
            _, secret = store.create_token(name)
            node_end, plane_end = transport_pair()
            nursery.start_soon(partial(serve_node, scheduler, plane_end, auth=store.check_token(secret)))
            mux = await nursery.start(hold, node_end)
            await mux.send_control(messages.encode(Hello(node_id=node_id, name=name, agent_version="0",
                                                         cpu_count=2, ram_mb=8000)))
            assert isinstance(messages.decode_plane_message(await mux.receive_control()), Welcome)
            return mux

        yield scheduler, connect
        nursery.cancel_scope.cancel()
    store.close()


async def announce(mux, *deployments) -> LocalVerdict:
    await mux.send_control(messages.encode(Local(tuple(deployments))))
    while True:
        reply = messages.decode_plane_message(await mux.receive_control())
        if not isinstance(reply, Assign):
            assert isinstance(reply, LocalVerdict), reply
            return reply


async def test_an_accepted_deployment_is_routed_listed_and_dropped_with_its_connection(plane, tmp_path):
    scheduler, connect = plane
    with trio.fail_after(10):
        node_end, plane_end = transport_pair()
        store = scheduler.store
        _, secret = store.create_token("desk")
        async with trio.open_nursery() as nursery, open_mux(node_end, opener=True) as mux:
            nursery.start_soon(partial(serve_node, scheduler, plane_end, auth=store.check_token(secret)))
            await mux.send_control(messages.encode(Hello(node_id="n1", name="desk", agent_version="0",
                                                         cpu_count=2, ram_mb=8000)))
            messages.decode_plane_message(await mux.receive_control())

            verdict = await announce(mux, dep(state="starting"))
            assert verdict == LocalVerdict(accepted=("mine",), refused={})
            assert scheduler.deploys("mine-model") and scheduler.routes("mine-model") == []  # 503, not 404

            await announce(mux, dep(max_concurrency=4))
            (route,) = scheduler.routes("mine-model")
            assert (route.replica.replica_id, route.node_id, route.max_concurrency) == ("local:mine", "n1", 4)
            assert list(scheduler.models()) == ["mine-model"]
            (row,) = scheduler.status()["deployments"]
            assert (row["service"], row["owner"], row["ready"], row["replicas"][0]["state"]) == \
                ("mine", "desk", 1, "ready")

            # Withdrawn by the node: an empty set.
            assert await announce(mux) == LocalVerdict()
            assert not scheduler.deploys("mine-model") and scheduler.status()["deployments"] == []
            await announce(mux, dep())
            assert scheduler.routes("mine-model")
            # The connection ends: gone at once, not after the lost-node timeout.
            nursery.cancel_scope.cancel()
        assert not scheduler.deploys("mine-model")
        assert scheduler.models() == {} and scheduler.status()["deployments"] == []


async def test_a_hostile_node_gets_each_bad_announcement_refused_by_name(plane):
    scheduler, connect = plane
    with trio.fail_after(10):
        mux = await connect("n1", "desk")
        verdict = await announce(
            mux,
            dep("../etc", models=("a",)),
            dep("badver", models=("b",), version="1"),
            dep("nomodels", models=()),
            dep("toomany", models=tuple(f"m{i}" for i in range(MAX_MODELS + 1))),
            dep("badmodel", models=("a b",)),
            dep("twice", models=("t", "t")),
            dep("zero", models=("z",), max_concurrency=0),
            dep("huge", models=("h",), max_concurrency=10**9),
            dep("good", models=("g",), detail="\x1b[31mred\x1b[0m\n" + "x" * 10_000),
            dep("good", models=("g2",)),
        )
        assert verdict.accepted == ("good",)
        refused = verdict.refused
        assert "not a valid service id" in refused["#0"]
        assert "not SemVer" in refused["badver"]
        assert "lists no models" in refused["nomodels"]
        assert f"at most {MAX_MODELS}" in refused["toomany"]
        assert "not a valid model id" in refused["badmodel"]
        assert "a model twice" in refused["twice"]
        assert "max_concurrency 0" in refused["zero"] and "max_concurrency" in refused["huge"]
        assert len(refused) == 9  # the second "good" too: already run by this node
        (row,) = scheduler.status()["deployments"]
        detail = row["replicas"][0]["detail"]
        assert "\x1b" not in detail and "\n" not in detail and len(detail) == MAX_DETAIL

        many = [dep(f"s{i}", models=(f"m{i}",)) for i in range(MAX_PER_NODE + 2)]
        verdict = await announce(mux, *many)
        assert len(verdict.accepted) == MAX_PER_NODE and len(verdict.refused) == 2

        # Not even the shape of a deployment: the connection is closed, the plane serves on.
        await mux.send_control(json.dumps({"type": "local", "deployments": [{"service_id": 5}]}))
        error = messages.decode_plane_message(await mux.receive_control())
        assert isinstance(error, Error) and error.fatal and "invalid control message" in error.message
        await wait_until(lambda: scheduler.status()["deployments"] == [])
        other = await connect("n2", "other")
        assert (await announce(other, dep())).accepted == ("mine",)


async def test_collisions_are_refused_both_ways_first_come_first_served(plane):
    scheduler, connect = plane
    with trio.fail_after(10):
        await scheduler.deploy("echo")  # plane-managed; its model is "echo"
        desk = await connect("n1", "desk")
        other = await connect("n2", "other")

        verdict = await announce(desk, dep("mine", models=("echo",)))
        assert verdict.refused == {"mine": "model 'echo' is already served by service 'echo'"}
        verdict = await announce(desk, dep("echo", models=("echo-dev",)))
        assert verdict.refused == {"echo": "service 'echo' is deployed by the control plane"}

        assert (await announce(desk, dep("mine", models=("x", "y")))).accepted == ("mine",)
        verdict = await announce(other, dep("theirs", models=("y",)))
        assert verdict.refused == {"theirs": "model 'y' is already served by node 'desk' (service 'mine')"}
        verdict = await announce(other, dep("mine", models=("z",)))
        assert verdict.refused == {"mine": "service 'mine' is already run by node 'desk'"}
        assert [r.node_id for r in scheduler.routes("y")] == ["n1"]

        # The plane refuses a deployment of its own that would take a node's model or service id.
        with pytest.raises(DeployConflict, match="model 'x' is already served by node 'desk'"):
            await scheduler.deploy("x")
        with pytest.raises(DeployConflict, match="service 'mine' is run by node 'desk'"):
            await scheduler.deploy("mine")


async def test_a_node_owned_deployment_is_never_placed_on_another_node(plane):
    scheduler, connect = plane
    with trio.fail_after(10):
        desk = await connect("n1", "desk")
        other = await connect("n2", "other")
        await announce(desk, dep())
        await scheduler.reconcile_once()
        assign = messages.decode_plane_message(await other.receive_control())
        assert isinstance(assign, Assign) and assign.replicas == ()
        # Its node is lost: the deployment goes with it instead of moving to the other node.
        scheduler.registry.disconnect("n1", scheduler.registry.get("n1").epoch)
        await scheduler.reconcile_once()
        assert scheduler.status()["deployments"] == [] and scheduler.routes("mine-model") == []
        assert not [r for r in scheduler.status()["nodes"] if r["replicas"]]


async def test_a_lost_node_loses_its_deployment_and_gets_it_back_when_it_speaks_again(tmp_path, autojump_clock):
    store = ClusterStore(tmp_path / "cluster.db")
    scheduler = Scheduler(store, resolve, hub_url="http://hub.invalid", lost_after=15, heartbeat_interval=5)
    _, secret = store.create_token("desk")
    node_end, plane_end = transport_pair()
    try:
        with trio.fail_after(3600):
            async with trio.open_nursery() as nursery:
                await nursery.start(scheduler.registry.run_sweeper)
                autojump_clock.autojump_threshold = math.inf  # SQLite threads until the welcome
                nursery.start_soon(partial(serve_node, scheduler, plane_end, auth=store.check_token(secret)))
                async with open_mux(node_end, opener=True) as mux:
                    await mux.send_control(messages.encode(Hello(node_id="n1", name="desk", agent_version="0",
                                                                 cpu_count=2, ram_mb=8000)))
                    messages.decode_plane_message(await mux.receive_control())
                    autojump_clock.autojump_threshold = 0
                    assert (await announce(mux, dep())).accepted == ("mine",)
                    # Silent on an open connection (SIGSTOP, a half-open socket): lost, its models go.
                    await wait_until(lambda: scheduler.registry.get("n1").state is NodeState.LOST, interval=1)
                    assert not scheduler.deploys("mine-model")
                    await mux.send_control(messages.encode(Heartbeat(seq=1, free_ram_mb=4000)))
                    verdict = messages.decode_plane_message(await mux.receive_control())
                    assert verdict == LocalVerdict(accepted=("mine",), refused={})
                    assert [r.node_id for r in scheduler.routes("mine-model")] == ["n1"]
                nursery.cancel_scope.cancel()
    finally:
        store.close()
