import trio

from runtime.control.messages import Heartbeat, Hello
from runtime.scheduler.registry import NodeRegistry, NodeState


def hello(node_id="n1", name="desk"):
    return Hello(node_id=node_id, name=name, agent_version="0.1.0", cpu_count=2, ram_mb=8000)


async def test_heartbeats_keep_a_node_ready_and_silence_makes_it_lost(autojump_clock):
    registry = NodeRegistry(lost_after=15, gone_after=60)
    changes = []
    reached = {state: trio.Event() for state in NodeState}

    def listen(node, before):
        changes.append((trio.current_time(), before, node.state))
        reached[node.state].set()

    registry.subscribe(listen)
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run_sweeper)
        start = trio.current_time()
        epoch = registry.connect(hello())
        for seq in range(10):  # 50 s of heartbeats every 5 s
            await trio.sleep(5)
            assert registry.heartbeat("n1", epoch, Heartbeat(seq=seq, free_ram_mb=4000))
        assert registry.get("n1").state is NodeState.READY
        silent_since = trio.current_time()
        await reached[NodeState.LOST].wait()
        detected = trio.current_time() - silent_since
        assert 15 <= detected <= 16  # within the timeout + 1 s
        await reached[NodeState.GONE].wait()
        assert registry.get("n1") is None
        nursery.cancel_scope.cancel()
    states = [(before, after) for _, before, after in changes]
    assert states == [(NodeState.JOINING, NodeState.READY), (NodeState.READY, NodeState.LOST),
                      (NodeState.LOST, NodeState.GONE)]
    assert changes[-1][0] - changes[1][0] >= 60
    assert changes[0][0] == start


async def test_a_node_that_resumes_heartbeating_is_ready_again(autojump_clock):
    registry = NodeRegistry(lost_after=15)
    epoch = registry.connect(hello())
    await trio.sleep(20)  # frozen (SIGSTOP) longer than the timeout
    registry.sweep()
    assert registry.get("n1").state is NodeState.LOST
    assert registry.heartbeat("n1", epoch, Heartbeat(seq=1, free_ram_mb=1))
    assert registry.get("n1").state is NodeState.READY


async def test_messages_from_a_replaced_connection_are_ignored(autojump_clock):
    registry = NodeRegistry()
    old = registry.connect(hello())
    new = registry.connect(hello(name="desk-renamed"))
    assert new != old
    assert not registry.heartbeat("n1", old, Heartbeat(seq=9, free_ram_mb=1))
    registry.disconnect("n1", old)  # the old socket closing must not mark the node lost
    assert registry.get("n1").state is NodeState.READY
    assert registry.get("n1").name == "desk-renamed"
    registry.disconnect("n1", new)
    assert registry.get("n1").state is NodeState.LOST


async def test_unknown_nodes_and_listing(autojump_clock):
    registry = NodeRegistry()
    assert not registry.heartbeat("ghost", 1, Heartbeat(seq=1, free_ram_mb=1))
    registry.connect(hello("b", "beta"))
    registry.connect(hello("a", "alpha"))
    assert [n.name for n in registry.nodes()] == ["alpha", "beta"]
    registry.disconnect("a", registry.get("a").epoch)
    assert [n.name for n in registry.nodes(NodeState.READY)] == ["beta"]
