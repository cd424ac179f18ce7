"""The control channel end to end: real WebSockets on 127.0.0.1, the real scheduler and agent.

The executor is a stand-in (the tests are about joining, heartbeats, placement and the
tunnel, not about installing): it reports each assigned replica ready at once and points
it at a real HTTP worker.
"""

import json
from functools import partial

import pytest
import trio
import trio_websocket
from hypercorn.config import Config
from hypercorn.trio import serve

from packer import parse_source_manifest
from runtime.control import messages
from runtime.control.messages import ReplicaReport
from runtime.node.agent import AgentConfig, JoinRefused, run_agent
from runtime.scheduler.node_connection import authenticate, serve_node
from runtime.scheduler.service import DeployError, Scheduler
from runtime.scheduler.store import TokenError
from runtime.tunnel.http import send_request
from tests.polling import wait_until
from tests.runtime.tunnel.test_http import Worker


async def resolve(service_id, version):
    version = "1.0.0" if version == "latest" else version
    return parse_source_manifest(json.dumps({
        "service_id": service_id, "version": version, "startup_command": "python worker.py",
        "models": [{"model_id": service_id, "model_type": "chat"}],
        "resources": {"ram_mb": 10},
    }).encode())


class FakeExecutor:
    def __init__(self, worker_url, models=None):
        self.worker_url_value = worker_url
        self.models = models
        self.running = {}
        self.assigns = []

    def inventory(self):
        return (), tuple(self.running.values())

    def apply(self, assign, hub_url, report):
        self.assigns.append(assign)
        self.running = {}
        for a in assign.replicas:
            rep = ReplicaReport(a.replica_id, a.service_id, a.version, a.attempt, "ready",
                                models=self.models or (a.service_id,), max_concurrency=4)
            self.running[a.replica_id] = rep
            report(rep)

    def worker_url(self, replica_id):
        return self.worker_url_value if replica_id in self.running else None


class Plane:
    def __init__(self, scheduler, url):
        self.scheduler = scheduler
        self.url = url

    @property
    def port(self):
        return int(self.url.rsplit(":", 1)[1])


async def serve_worker(nursery):
    """The stand-in worker (tests.runtime.tunnel.test_http.Worker) on 127.0.0.1, port 0."""
    app = Worker()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    app.base_url = (await nursery.start(partial(serve, app, config)))[0]
    return app


async def serve_plane(nursery, store):
    """A scheduler on `store` behind the node WebSocket endpoint, as routes.py wires it."""
    scheduler = Scheduler(store, resolve, hub_url="http://127.0.0.1:1", lost_after=2, heartbeat_interval=0.2)

    async def handler(request):
        try:
            headers = {k.decode().lower(): v.decode() for k, v in request.headers}
            auth = await authenticate(scheduler, headers.get("authorization"))
        except TokenError as exc:
            await request.reject(401, body=json.dumps({"detail": str(exc)}).encode())
            return
        ws = await request.accept()
        await serve_node(scheduler, ws, auth=auth, peer="test")

    await nursery.start(scheduler.run)
    server = await nursery.start(partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None))
    return Plane(scheduler, f"http://127.0.0.1:{server.port}")


def agent_config(plane, name, token=None):
    if token is None:
        _, token = plane.scheduler.store.create_token(name)
    return AgentConfig(url=plane.url, token=token, node_id=f"id-{name}", name=name, backoff_initial=0.05)


async def test_join_deploy_and_request_through_the_tunnel(plane, worker, nursery):
    executor = FakeExecutor(worker.base_url)
    with trio.fail_after(20):
        welcome = await nursery.start(run_agent, agent_config(plane, "alpha"), executor)
        assert welcome.node_id == "id-alpha"
        status = plane.scheduler.status()
        assert [(n["name"], n["state"]) for n in status["nodes"]] == [("alpha", "ready")]

        await plane.scheduler.deploy("echo", replicas=1)
        await wait_until(lambda: plane.scheduler.routes("echo"))
        (route,) = plane.scheduler.routes("echo")
        assert route.node_id == "id-alpha" and route.max_concurrency == 4

        mux = plane.scheduler.mux_for(route.node_id)
        response = await send_request(mux, "POST", "/echo", [], b"hi", route={"replica_id": route.replica.replica_id})
        assert response.status == 201 and await response.read() == b"hi"

        response = await send_request(mux, "POST", "/echo", [], b"x", route={"replica_id": "r999"})
        assert response.status == 503

        status = plane.scheduler.status()
        assert status["deployments"][0] | {"replicas": None} == {
            "service": "echo", "version": "1.0.0", "desired": 1, "ready": 1, "models": ["echo"],
            "unplaced": None, "replicas": None, "track": None, "track_error": None, "port": None}
        assert status["models"] == [{"model": "echo", "replicas": 1, "service": "echo"}]
        await wait_until(lambda: plane.scheduler.registry.get("id-alpha").heartbeats >= 2)


async def test_a_killed_node_loses_its_replica_to_another(plane, worker):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            alpha_scope = trio.CancelScope()

            async def alpha(task_status=trio.TASK_STATUS_IGNORED):
                with alpha_scope:
                    await run_agent(agent_config(plane, "alpha"), FakeExecutor(worker.base_url),
                                    task_status=task_status)

            await nursery.start(alpha)
            beta_exec = FakeExecutor(worker.base_url)
            await nursery.start(run_agent, agent_config(plane, "beta"), beta_exec)
            await plane.scheduler.deploy("echo", replicas=2)
            await wait_until(lambda: len(plane.scheduler.routes("echo")) == 2)
            assert {r.node_id for r in plane.scheduler.routes("echo")} == {"id-alpha", "id-beta"}

            alpha_scope.cancel()  # the node dies: its socket closes
            await wait_until(lambda: plane.scheduler.registry.get("id-alpha").state == "lost")
            await wait_until(lambda: len(plane.scheduler.routes("echo")) == 2
                             and {r.node_id for r in plane.scheduler.routes("echo")} == {"id-beta"})
            moved = [r.replica for r in plane.scheduler.routes("echo") if r.replica.attempt == 2]
            assert len(moved) == 1
            # A late report for the old attempt is ignored.
            stale = ReplicaReport(moved[0].replica_id, "echo", "1.0.0", 1, "failed")
            assert not plane.scheduler.report("id-alpha", stale)
            nursery.cancel_scope.cancel()


async def test_status_never_shows_a_replica_on_a_lost_node_as_ready(plane, worker):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(run_agent, agent_config(plane, "alpha"), FakeExecutor(worker.base_url))
            await plane.scheduler.deploy("echo")
            await wait_until(lambda: plane.scheduler.routes("echo"))
            nursery.cancel_scope.cancel()  # the only node dies: its replica has nowhere to go
        await wait_until(lambda: plane.scheduler.registry.get("id-alpha").state == "lost")
        (dep,) = plane.scheduler.status()["deployments"]
        assert dep["ready"] == 0 and [r["state"] for r in dep["replicas"]] == ["lost"]
        assert not plane.scheduler.routes("echo")

async def test_a_bad_token_is_refused_without_retrying(plane):
    with trio.fail_after(10):
        with pytest.raises(JoinRefused, match="refused the join token"):
            await run_agent(agent_config(plane, "mallory", token="fjt_nope_secret"), FakeExecutor(None))
        _, token = plane.scheduler.store.create_token("revoked")
        plane.scheduler.store.revoke_token("revoked")
        with pytest.raises(JoinRefused):
            await run_agent(agent_config(plane, "eve", token=token), FakeExecutor(None))


@pytest.mark.parametrize("garbage", ["not json", '{"type": "assign", "generation": 1}',
                                     '{"type": "heartbeat"}', "x" * (2 * 1024 * 1024)])
async def test_a_malformed_first_message_closes_only_that_connection(plane, worker, nursery, garbage):
    _, token = plane.scheduler.store.create_token("raw")
    with trio.fail_after(10):
        async with trio_websocket.open_websocket(
            "127.0.0.1", plane.port, "/api/cluster/connect", use_ssl=False,
            extra_headers=[("Authorization", f"Bearer {token}")], max_message_size=4 * 2**20,
        ) as ws:
            try:
                await ws.send_message(garbage)
                reply = messages.decode_plane_message(await ws.get_message())
                assert reply.fatal
            except trio_websocket.ConnectionClosed:
                pass  # an oversized message may close the socket before the reply is read
            with pytest.raises(trio_websocket.ConnectionClosed):
                await ws.get_message()
        # The plane keeps serving.
        await nursery.start(run_agent, agent_config(plane, "after"), FakeExecutor(worker.base_url))
        assert plane.scheduler.registry.get("id-after").state == "ready"


async def test_model_conflict_is_refused_at_deploy_time(plane):
    await plane.scheduler.deploy("echo")

    async def other_claims_echo(service_id, version):
        manifest = await resolve("other", version)
        return manifest.__class__(**{**manifest.__dict__, "models": (await resolve("echo", version)).models})

    plane.scheduler._resolve = other_claims_echo
    with pytest.raises(DeployError, match="model 'echo' is already served by service 'echo'"):
        await plane.scheduler.deploy("other")


async def test_a_deploy_without_a_count_keeps_the_current_one(plane):
    assert (await plane.scheduler.deploy("echo")).replicas == 1
    await plane.scheduler.scale("echo", 3)
    assert (await plane.scheduler.deploy("echo", "1.0.0")).replicas == 3
    assert (await plane.scheduler.deploy("echo", replicas=2)).replicas == 2


async def test_a_deploy_without_nodes_keeps_the_pin_and_an_empty_list_removes_it(plane, worker, nursery):
    with trio.fail_after(20):
        await nursery.start(run_agent, agent_config(plane, "alpha"), FakeExecutor(worker.base_url))
        assert (await plane.scheduler.deploy("echo")).nodes == ()
        assert (await plane.scheduler.deploy("echo", nodes=("alpha",))).nodes == ("alpha",)
        assert (await plane.scheduler.deploy("echo", "1.0.0")).nodes == ("alpha",)
        assert (await plane.scheduler.scale("echo", 2)).nodes == ("alpha",)
        assert (await plane.scheduler.deploy("echo", nodes=())).nodes == ()
        assert (await plane.scheduler.deploy("echo")).nodes == ()
