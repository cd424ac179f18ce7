"""Declared ports on one node: a replica waits for the one it replaces, never takes a stranger's."""

import socket

import pytest
import trio

from runtime.node.workers import PortClaims, PortInUse, free_port


async def test_a_new_holder_waits_for_the_old_one_to_let_go(autojump_clock):
    claims = PortClaims()
    port = free_port()
    order = []

    async def old(task_status=trio.TASK_STATUS_IGNORED):
        async with claims.hold(port, "r1"):
            task_status.started()
            await trio.sleep(5)  # stopping its worker
            order.append("r1 released")

    async with trio.open_nursery() as nursery:
        await nursery.start(old)
        assert claims.holder(port) == "r1"
        async with claims.hold(port, "r2"):
            order.append("r2 holds")
            assert claims.holder(port) == "r2"
    assert order == ["r1 released", "r2 holds"] and claims.holder(port) is None


async def test_a_holder_that_never_lets_go_is_named(autojump_clock):
    claims = PortClaims(release_wait_s=3)
    port = free_port()
    async with claims.hold(port, "r1"):
        with pytest.raises(PortInUse, match=f"port {port} .* in use on this node by replica r1, still stopping"):
            async with claims.hold(port, "r2"):
                pass


async def test_a_port_another_process_listens_on_is_refused():
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(PortInUse) as info:
            async with PortClaims().hold(port, "r1"):
                pass
    assert info.value.busy_port == port and "by another process" in str(info.value)
    async with PortClaims().hold(None, "r1"):  # nothing declared: nothing to hold
        pass
