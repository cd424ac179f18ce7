"""Node identity end to end: a node id is bound at its first join, impersonators are refused,
a newer connection of a node displaces its older one, and revoking a join token disconnects
the nodes it enrolled for good. Real WebSockets on 127.0.0.1, the real scheduler and agent."""

from contextlib import asynccontextmanager

import pytest
import trio
import trio_websocket

from runtime.control import messages
from runtime.control.messages import Error, Hello, Welcome
from runtime.node.agent import AgentConfig, JoinRefused, run_agent
from runtime.scheduler.service import NodeLink, Scheduler
from runtime.scheduler.store import ClusterStore
from runtime.tunnel import TunnelError, open_mux
from runtime.tunnel.http import send_request
from tests.polling import wait_until
from tests.runtime.scheduler.test_cluster import FakeExecutor, resolve


class Agent:
    """A running agent: the credential it kept (as a node would on disk), how it ended."""

    def __init__(self):
        self.credential = ""
        self.saves = 0
        self.scope = trio.CancelScope()
        self.refused = None
        self.ended = trio.Event()

    def keep(self, credential):
        self.credential = credential
        self.saves += 1


def config(plane, name, token, **kwargs):
    return AgentConfig(url=plane.url, token=token, node_id=f"id-{name}", name=name,
                       **{"backoff_initial": 0.05, **kwargs})


async def join(plane, nursery, worker, name, token=None, **kwargs):
    """Start an agent for node `id-NAME` (with a new join token unless given one)."""
    if token is None:
        _, token = plane.scheduler.store.create_token(name)
    agent = Agent()

    async def run(task_status=trio.TASK_STATUS_IGNORED):
        try:
            with agent.scope:
                await run_agent(config(plane, name, token, **kwargs), FakeExecutor(worker.base_url),
                                keep_credential=agent.keep, task_status=task_status)
        except JoinRefused as exc:
            agent.refused = exc
        finally:
            agent.ended.set()

    await nursery.start(run)
    return agent


@asynccontextmanager
async def raw_node(plane, bearer, node_id):
    """A hand-driven node connection: hello sent; yields (mux, the plane's first answer)."""
    async with trio_websocket.open_websocket(
        "127.0.0.1", plane.port, "/api/cluster/connect", use_ssl=False,
        extra_headers=[("Authorization", f"Bearer {bearer}")],
    ) as ws, open_mux(ws, opener=True) as mux:
        hello = Hello(node_id=node_id, name="raw", agent_version="0", cpu_count=1, ram_mb=1000)
        await mux.send_control(messages.encode(hello))
        yield mux, messages.decode_plane_message(await mux.receive_control())


async def echo(plane, model="echo", body=b"hi"):
    (route,) = plane.scheduler.routes(model)
    reply = await send_request(plane.scheduler.mux_for(route.node_id), "POST", "/echo", [], body,
                               route={"replica_id": route.replica.replica_id})
    return reply.status, await reply.read()


async def test_first_join_issues_a_credential_and_later_joins_use_it(plane, worker, nursery):
    with trio.fail_after(20):
        alpha = await join(plane, nursery, worker, "alpha")
        assert alpha.credential.startswith("fnc_") and alpha.saves == 1
        assert plane.scheduler.store.check_credential(alpha.credential).node_id == "id-alpha"
        alpha.scope.cancel()
        await wait_until(lambda: plane.scheduler.registry.get("id-alpha").state == "lost")

        # Again with the credential alone (no join token): same id, no new credential.
        again = await join(plane, nursery, worker, "alpha", token="", credential=alpha.credential)
        assert plane.scheduler.registry.get("id-alpha").state == "ready" and again.saves == 0


async def test_an_impersonator_with_another_join_token_is_refused(plane, worker, nursery):
    with trio.fail_after(20):
        await join(plane, nursery, worker, "alpha")
        await plane.scheduler.deploy("echo")
        await wait_until(lambda: plane.scheduler.routes("echo"))
        epoch = plane.scheduler.registry.get("id-alpha").epoch

        _, other = plane.scheduler.store.create_token("mallory")
        with pytest.raises(JoinRefused, match="node id 'id-alpha' is already enrolled"):
            await run_agent(config(plane, "alpha", other), FakeExecutor(worker.base_url))
        # Not even the token that enrolled alpha can claim it again.
        alpha_token = plane.scheduler.store.create_token("alpha-2")[1]
        async with raw_node(plane, alpha_token, "id-alpha") as (_, answer):
            assert isinstance(answer, Error) and answer.fatal and answer.code == "identity"

        # The real node kept its connection (same epoch), its heartbeats and its traffic.
        node = plane.scheduler.registry.get("id-alpha")
        assert node.epoch == epoch and node.state == "ready"
        beats = node.heartbeats
        await wait_until(lambda: plane.scheduler.registry.get("id-alpha").heartbeats >= beats + 2)
        assert await echo(plane) == (201, b"hi")
        assert plane.scheduler.registry.get("id-alpha").epoch == epoch


async def test_a_credential_claims_only_its_own_node_id(plane, worker, nursery):
    with trio.fail_after(20):
        alpha = await join(plane, nursery, worker, "alpha")
        await join(plane, nursery, worker, "beta")
        beta_epoch = plane.scheduler.registry.get("id-beta").epoch
        async with raw_node(plane, alpha.credential, "id-beta") as (_, answer):
            assert isinstance(answer, Error) and answer.fatal and answer.code == "identity"
            assert "belongs to node 'id-alpha'" in answer.message
        assert plane.scheduler.registry.get("id-beta").epoch == beta_epoch


async def test_a_newer_connection_displaces_the_old_one_and_the_agent_is_back_at_once(plane, worker, nursery):
    with trio.fail_after(20):
        # A backoff of 30 s: only the immediate reconnect of a displaced agent fits in the deadline.
        alpha = await join(plane, nursery, worker, "alpha", backoff_initial=30, backoff_max=30)
        await plane.scheduler.deploy("echo")
        await wait_until(lambda: plane.scheduler.routes("echo"))
        first_epoch = plane.scheduler.registry.get("id-alpha").epoch

        closed = False
        try:
            async with raw_node(plane, alpha.credential, "id-alpha") as (mux, answer):
                # The newer connection is accepted (a node whose old TCP connection went
                # half-open gets in at once) and the old one is told why and closed ...
                assert isinstance(answer, Welcome) and answer.node_id == "id-alpha" and answer.credential == ""
                # ... so the real agent reconnects at once, which displaces this one in turn.
                while not isinstance(message := messages.decode_plane_message(await mux.receive_control()),
                                     Error):
                    pass
                assert message.fatal and message.code == "replaced"
                assert "replaced by a newer connection" in message.message
                await mux.receive_control()  # then the plane closes it
        except* TunnelError:
            closed = True
        assert closed and not alpha.ended.is_set()
        node = plane.scheduler.registry.get("id-alpha")
        assert node.epoch >= first_epoch + 2 and node.state == "ready"
        await wait_until(lambda: plane.scheduler.routes("echo"))
        assert await echo(plane) == (201, b"hi")


async def test_revoking_a_token_disconnects_its_nodes_for_good(plane, worker, nursery):
    with trio.fail_after(30):
        alpha = await join(plane, nursery, worker, "alpha")
        await join(plane, nursery, worker, "beta")
        await plane.scheduler.deploy("echo", replicas=2)
        await wait_until(lambda: len(plane.scheduler.routes("echo")) == 2)

        # Revoking alpha's token closes alpha's connection at once; the agent stops for good.
        assert await plane.scheduler.revoke_token("alpha") == 1
        assert plane.scheduler.mux_for("id-alpha") is None  # no request is routed there any more
        assert plane.scheduler.registry.get("id-alpha").state == "lost"
        await alpha.ended.wait()
        assert "revoked this node" in str(alpha.refused)

        # Its replica moves to beta; nothing routes to alpha.
        await wait_until(lambda: len(plane.scheduler.routes("echo")) == 2 and
                         {r.node_id for r in plane.scheduler.routes("echo")} == {"id-beta"})
        # Neither the credential nor another join token gets alpha's id back, and an agent
        # that has both never falls back to the token (that would undo the revocation).
        _, spare = plane.scheduler.store.create_token("spare")
        with pytest.raises(JoinRefused, match="refused this node's credential .*revoked"):
            await run_agent(config(plane, "alpha", spare, credential=alpha.credential), FakeExecutor(None))
        with pytest.raises(JoinRefused, match="already enrolled"):
            await run_agent(config(plane, "alpha", spare), FakeExecutor(None))
        assert plane.scheduler.store.enrolled_nodes().get(plane.scheduler.store.check_token(spare).token_id) is None



class Link:
    """A stand-in node connection for the scheduler's bookkeeping (no socket)."""

    def __init__(self, scheduler, node_id, token_id="t"):
        self.epoch = scheduler.registry.connect(
            Hello(node_id=node_id, name=node_id, agent_version="0", cpu_count=1, ram_mb=1000))
        self.closed = None
        self.link = NodeLink(self.epoch, self.send, object(), token_id, self.close)

    async def send(self, assign):
        pass

    def close(self, reason, code):
        self.closed = code


async def test_the_newest_hello_wins_whatever_order_connections_attach_in(tmp_path):
    store = ClusterStore(tmp_path / "cluster.db")
    try:
        scheduler = Scheduler(store, resolve, hub_url="http://127.0.0.1:1")
        older, newer = Link(scheduler, "n1"), Link(scheduler, "n1")
        scheduler.attach("n1", newer.link)
        scheduler.attach("n1", older.link)  # late: a newer connection said hello meanwhile
        assert older.closed == "replaced" and newer.closed is None
        assert scheduler.mux_for("n1") is newer.link.mux
        newest = Link(scheduler, "n1")
        scheduler.attach("n1", newest.link)
        assert newer.closed == "replaced" and scheduler.mux_for("n1") is newest.link.mux
    finally:
        store.close()


async def test_a_connection_admitted_before_a_revocation_never_attaches_after_it(tmp_path):
    store = ClusterStore(tmp_path / "cluster.db")
    try:
        scheduler = Scheduler(store, resolve, hub_url="http://127.0.0.1:1")
        record, _ = store.create_token("desk")
        admitted = Link(scheduler, "n1", token_id=record.token_id)  # hello checked, not attached yet
        assert await scheduler.revoke_token("desk") == 1
        scheduler.attach("n1", admitted.link)
        assert admitted.closed == "revoked" and scheduler.mux_for("n1") is None
    finally:
        store.close()
