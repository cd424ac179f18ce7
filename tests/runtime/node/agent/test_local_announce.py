"""The agent's side of node-owned deployments, against the real plane over a real WebSocket:
announced after the welcome and on every change, the verdict handed back, `local:` streams
forwarded to the node's own worker, and gone from the plane when the agent stops."""

from functools import partial

import pytest
import trio

from runtime.control.messages import Local, LocalDeployment
from runtime.node.agent import run_agent
from runtime.scheduler.store import ClusterStore
from runtime.tunnel.http import send_request
from tests.polling import wait_until
from tests.runtime.scheduler.test_cluster import (
    FakeExecutor,
    agent_config,
    serve_plane,
    serve_worker,
)


@pytest.fixture
async def worker(nursery):
    return await serve_worker(nursery)


@pytest.fixture
async def plane(nursery, tmp_path):
    store = ClusterStore(tmp_path / "cluster.db")
    yield await serve_plane(nursery, store)
    store.close()


class DirectoryStandIn:
    """A LocalServices whose one deployment the test sets; its worker is the stand-in worker."""

    def __init__(self, url):
        self.url = url
        self.deployment = None
        self.changes = 0
        self.verdicts = []
        self._lot = trio.lowlevel.ParkingLot()

    def set(self, **fields):
        base = dict(service_id="mine", version="1.0.0", state="starting", models=("mine-model",))
        self.deployment = LocalDeployment(**(base | fields))
        self.changes += 1
        self._lot.unpark_all()

    def announcement(self):
        return self.changes, Local((self.deployment,) if self.deployment else ())

    async def wait_changed(self, seen):
        while self.changes == seen:
            await self._lot.park()

    def worker_url(self, replica_id):
        d = self.deployment
        return self.url if d and d.state == "ready" and replica_id == f"local:{d.service_id}" else None

    def verdict(self, verdict):
        self.verdicts.append(verdict)


async def test_an_agent_announces_its_own_deployment_and_serves_it(plane, worker):
    scheduler = plane.scheduler
    mine = DirectoryStandIn(worker.base_url)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(run_agent, agent_config(plane, "alpha"), FakeExecutor(None), local=mine))
            mine.set()
            await wait_until(lambda: mine.verdicts and mine.verdicts[-1].accepted == ("mine",))
            assert scheduler.deploys("mine-model") and not scheduler.routes("mine-model")

            mine.set(state="ready", max_concurrency=3)
            await wait_until(lambda: scheduler.routes("mine-model"))
            (route,) = scheduler.routes("mine-model")
            response = await send_request(scheduler.mux_for(route.node_id), "POST", "/echo", [], b"hi",
                                          route={"replica_id": route.replica.replica_id})
            assert response.status == 201 and await response.read() == b"hi"
            assert route.max_concurrency == 3

            # Another node claiming the same model is refused; the first keeps it.
            theirs = DirectoryStandIn(worker.base_url)
            async with trio.open_nursery() as other:
                await other.start(partial(run_agent, agent_config(plane, "beta"), FakeExecutor(None), local=theirs))
                theirs.set(service_id="theirs")
                await wait_until(lambda: theirs.verdicts)
                assert theirs.verdicts[-1].refused == {
                    "theirs": "model 'mine-model' is already served by node 'alpha' (service 'mine')"}
                other.cancel_scope.cancel()
            assert [r.node_id for r in scheduler.routes("mine-model")] == ["id-alpha"]

            nursery.cancel_scope.cancel()  # the agent stops: its connection closes
        await wait_until(lambda: not scheduler.deploys("mine-model"))
        assert scheduler.status()["deployments"] == []
