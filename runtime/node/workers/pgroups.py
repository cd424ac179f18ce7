"""Process groups: a worker and every process it starts, signalled and reaped as one."""

from __future__ import annotations

import os
import signal

import trio

GROUP_POLL_S = 0.05


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to process group `pgid`; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


async def terminate_group(proc: trio.Process, *, grace_s: float) -> None:
    """run_process's deliver_cancel: SIGTERM to the child's group, SIGKILL after `grace_s`."""
    signal_group(proc.pid, signal.SIGTERM)
    await trio.sleep(grace_s)
    signal_group(proc.pid, signal.SIGKILL)


async def stop_group(pgid: int, *, grace_s: float, poll_s: float = GROUP_POLL_S) -> None:
    """Stop what is left of a group whose leader has exited: SIGTERM, up to `grace_s`, SIGKILL."""
    if not await group_alive(pgid):
        return
    signal_group(pgid, signal.SIGTERM)
    with trio.move_on_after(grace_s):
        while True:
            if not await group_alive(pgid):
                return
            await trio.sleep(poll_s)
    signal_group(pgid, signal.SIGKILL)


async def group_alive(pgid: int) -> bool:
    """True while some process of group `pgid` runs (zombies awaiting init do not count)."""
    if not signal_group(pgid, 0):
        return False
    return await trio.to_thread.run_sync(_has_live_member, pgid)


def _has_live_member(pgid: int) -> bool:
    # Orphans are reaped by init, which may take a while (seconds in some
    # containers); a zombie holds no resources, so it does not count.
    try:
        names = os.listdir("/proc")
    except FileNotFoundError:
        return True  # not Linux: killpg(0) succeeding is all we know
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False
