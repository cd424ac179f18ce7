"""A session survives the loss of its replica: it moves to another and keeps its history."""

import json
from functools import partial

import trio
import trio_websocket
from quart_trio import QuartTrio

from runtime.dispatch import Dispatcher
from runtime.dispatch.limits import Principal
from runtime.http import open_test_server
from runtime.node.agent import AgentConfig, run_agent
from runtime.scheduler import routes as cluster_routes
from runtime.scheduler.service import Scheduler
from runtime.scheduler.store import ClusterStore
from runtime.sessions import routes
from runtime.sessions.backend import ClusterBackend
from runtime.sessions.manager import SessionManager
from tests.examples.workers import EXAMPLES, spawn_worker
from tests.polling import wait_until
from tests.runtime.scheduler.test_cluster import FakeExecutor, resolve


async def talk(ws, text):
    await ws.send_message(json.dumps({"type": "text", "content": text}))
    while (message := json.loads(await ws.get_message()))["type"] == "text_delta":
        pass
    return message


async def test_session_moves_to_another_replica_with_its_history(tmp_path):
    workers = [await trio.to_thread.run_sync(partial(spawn_worker, EXAMPLES / "echo")) for _ in range(2)]
    store = ClusterStore(tmp_path / "cluster.db")
    scheduler = Scheduler(store, resolve, hub_url="http://127.0.0.1:1", heartbeat_interval=0.5)
    manager = SessionManager()

    async def authenticate(header):
        return Principal("tenant", key_id="k")

    app = QuartTrio("failover")
    routes.register(app, manager, ClusterBackend(Dispatcher(scheduler)), scheduler, authenticate=authenticate)
    cluster_routes.register(app, scheduler, admin_key_hash="0" * 64, version="t", roles=("scheduler",))
    try:
        with trio.fail_after(60):
            async with open_test_server(app) as url, trio.open_nursery() as nursery:
                await nursery.start(scheduler.run)
                scopes = {}
                for i, worker in enumerate(workers):
                    scopes[f"n{i}"] = scope = trio.CancelScope()
                    _, token = store.create_token(f"n{i}")

                    async def node(config, executor, scope=scope, task_status=trio.TASK_STATUS_IGNORED):
                        with scope:
                            await run_agent(config, executor, task_status=task_status)

                    await nursery.start(node, AgentConfig(url=url, token=token, node_id=f"n{i}", name=f"n{i}"),
                                        FakeExecutor(worker.url))
                await scheduler.deploy("echo", replicas=2)
                await wait_until(lambda: len(scheduler.routes("echo")) == 2)
                session = manager.create("tenant", "echo", system_prompt="remember me",
                                         principal=Principal("tenant", key_id="k"))
                port = int(url.rsplit(":", 1)[1])
                async with trio_websocket.open_websocket(
                        "127.0.0.1", port, f"/ws/sessions/{session.session_id}?token={session.token}",
                        use_ssl=False) as ws:
                    assert (await talk(ws, "first question"))["content"] == "first question"
                    first_replica, first_node = session.replica_id, session.node_id
                    assert first_replica is not None

                    scopes[first_node].cancel()  # the pinned replica's node dies
                    # Its replica is placed again on the surviving node; none stays on the dead one.
                    await wait_until(lambda: scheduler.routes("echo") and all(
                        r.node_id != first_node for r in scheduler.routes("echo")))
                    assert (await talk(ws, "second question"))["content"] == "second question"
                assert session.node_id != first_node
                assert [role for role, _ in session.history.turns] == ["user", "assistant"] * 2
                nursery.cancel_scope.cancel()
    finally:
        for worker in workers:
            await trio.to_thread.run_sync(worker.stop)
        store.close()
