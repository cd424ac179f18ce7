"""The inter-process lock: exclusive, never through a planted symlink, no leftover files."""

import errno

import pytest
import trio

from runtime.node.packages.lock import hold_lock, release, try_lock


async def test_second_holder_waits_and_the_file_is_gone_after(tmp_path):
    path = tmp_path / "x.lock"
    order = []

    async def holder(name, entered):
        async with hold_lock(path, poll_max=0.01):
            order.append(f"{name} in")
            entered.set()
            await trio.sleep(0.05)
            order.append(f"{name} out")

    with trio.fail_after(10):
        first_in = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(holder, "a", first_in)
            await first_in.wait()
            nursery.start_soon(holder, "b", trio.Event())
    assert order == ["a in", "a out", "b in", "b out"]
    assert not path.exists()


def test_a_planted_symlink_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    path = tmp_path / "x.lock"
    path.symlink_to(victim)
    with pytest.raises(OSError) as info:
        try_lock(path)
    assert info.value.errno == errno.ELOOP
    assert victim.read_text() == "keep"


def test_try_lock_is_exclusive_across_descriptors(tmp_path):
    path = tmp_path / "x.lock"
    fd = try_lock(path)
    assert fd is not None and try_lock(path) is None
    release(path, fd)
    again = try_lock(path)
    assert again is not None
    release(path, again)
