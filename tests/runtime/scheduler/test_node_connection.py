"""A node's control connection as the plane serves it, on Trio's autojump clock: a node that
falls silent on an open connection is lost after lost_after (not before) and gone after
gone_after. The real scheduler and serve_node; the node is a bare mux over memory."""

import math
from functools import partial

import trio

from runtime.control import messages
from runtime.control.messages import Heartbeat, Hello, Welcome
from runtime.scheduler.node_connection import serve_node
from runtime.scheduler.registry import SWEEP_INTERVAL, NodeState
from runtime.scheduler.service import Scheduler
from runtime.scheduler.store import ClusterStore
from runtime.tunnel import open_mux
from tests.runtime.scheduler.test_cluster import resolve
from tests.runtime.tunnel.test_mux import transport_pair

LIMIT = 3600  # virtual seconds


async def test_a_node_silent_on_an_open_connection_is_lost_then_gone(tmp_path, autojump_clock):
    store = ClusterStore(tmp_path / "cluster.db")
    scheduler = Scheduler(store, resolve, hub_url="http://hub.invalid", lost_after=15, heartbeat_interval=5)
    scheduler.registry.gone_after = 60
    _, secret = store.create_token("desk")
    changes = []
    reached = {state: trio.Event() for state in NodeState}

    def listen(node, before):
        changes.append((trio.current_time(), node.state))
        reached[node.state].set()

    scheduler.registry.subscribe(listen)
    node_end, plane_end = transport_pair()
    try:
        with trio.fail_after(LIMIT):
            async with trio.open_nursery() as nursery:
                await nursery.start(scheduler.registry.run_sweeper)
                # The join reads and writes SQLite in threads; hold the clock still until the welcome.
                autojump_clock.autojump_threshold = math.inf
                nursery.start_soon(partial(serve_node, scheduler, plane_end, auth=store.check_token(secret)))
                async with open_mux(node_end, opener=True) as mux:
                    await mux.send_control(messages.encode(Hello(
                        node_id="n1", name="desk", agent_version="0", cpu_count=2, ram_mb=8000)))
                    welcome = messages.decode_plane_message(await mux.receive_control())
                    assert isinstance(welcome, Welcome) and welcome.heartbeat_interval_s == 5
                    autojump_clock.autojump_threshold = 0
                    for seq in range(1, 9):  # 40 s of heartbeats: longer than lost_after
                        await trio.sleep(welcome.heartbeat_interval_s)
                        await mux.send_control(messages.encode(Heartbeat(seq=seq, free_ram_mb=4000)))
                    silent_since = trio.current_time()
                    assert scheduler.registry.get("n1").state is NodeState.READY
                    await trio.sleep(15 - SWEEP_INTERVAL)
                    assert scheduler.registry.get("n1").state is NodeState.READY  # not before lost_after
                    await reached[NodeState.LOST].wait()
                    lost_at = trio.current_time()
                    await reached[NodeState.GONE].wait()
                    gone_at = trio.current_time()
                    assert scheduler.registry.get("n1") is None
                nursery.cancel_scope.cancel()
    finally:
        store.close()
    assert [state for _, state in changes] == [NodeState.READY, NodeState.LOST, NodeState.GONE]
    assert 15 <= lost_at - silent_since <= 15 + SWEEP_INTERVAL
    assert 60 <= gone_at - lost_at <= 60 + SWEEP_INTERVAL
