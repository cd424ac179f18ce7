"""Deployments that follow a hub channel (`flowctl deploy SERVICE --track stable|latest`).

A tracked deployment is upgraded by itself, with the usual rolling upgrade, when the
channel points at a newer version than it runs: `stable` is the hub's highest stable,
non-yanked version, `latest` its highest non-yanked one. It only moves up (a yanked
version does not roll it back); a deployment pinned to a version never moves.

The hub is asked every `interval` seconds (DEFAULT_TRACK_INTERVAL, so a remote hub's
publish is seen within that), and at once when `poke()` is called: the plane does that
after every successful publish or flag change on a hub in the same process
(`watch_hub_writes`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from packer.semver import parse_version
from runtime.errors import FlowError

if TYPE_CHECKING:
    from runtime.scheduler.service import Scheduler

log = logging.getLogger("flowctl.scheduler")
DEFAULT_TRACK_INTERVAL = 30.0
CHECK_TIMEOUT = 60.0
ChannelLookup = Callable[[str, str], Awaitable[str | None]]


class ChannelTracker:
    """Moves tracked deployments to their channel's newest version (see the module docstring)."""

    def __init__(self, scheduler: Scheduler, lookup: ChannelLookup, *, interval: float = DEFAULT_TRACK_INTERVAL):
        if interval <= 0:
            raise ValueError("the track interval must be positive")
        self._scheduler = scheduler
        self._lookup = lookup
        self.interval = interval
        self.errors: dict[str, str] = {}
        self._poked = trio.Event()

    async def lookup(self, service_id: str, track: str) -> str | None:
        """The version `track` points at for `service_id` now, or None."""
        with trio.fail_after(CHECK_TIMEOUT):
            return await self._lookup(service_id, track)

    def poke(self) -> None:
        """Check the channels now (something was published or flagged on the hub)."""
        self._poked.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Check every `interval` seconds, or when poked, until cancelled."""
        task_status.started()
        while True:
            with trio.move_on_after(self.interval):
                await self._poked.wait()
            self._poked = trio.Event()
            await self.check_once()

    async def check_once(self) -> list[str]:
        """One pass over the tracked deployments; returns the services it upgraded."""
        upgraded = []
        for dep in self._scheduler.deployments():
            if not dep.track:
                continue
            try:
                with trio.fail_after(CHECK_TIMEOUT):
                    target = await self._lookup(dep.service_id, dep.track)
                    current = self._scheduler.deployment(dep.service_id)
                    if (target is None or current is None or current.track != dep.track
                            or parse_version(target) <= parse_version(current.version)):
                        self.errors.pop(dep.service_id, None)
                        continue
                    await self._scheduler.deploy(dep.service_id, target, track=dep.track)
            except (FlowError, trio.TooSlowError, ValueError) as exc:
                message = f"cannot follow {dep.track}: {exc or type(exc).__name__}"
                if self.errors.get(dep.service_id) != message:
                    log.warning("deployment %s %s", dep.service_id, message)
                self.errors[dep.service_id] = message
                continue
            self.errors.pop(dep.service_id, None)
            log.info("deployment %s follows %s: upgrading %s -> %s", dep.service_id, dep.track,
                     dep.version, target)
            upgraded.append(dep.service_id)
        return upgraded


_HUB_WRITES = ("PUT", "POST")


def watch_hub_writes(app: Any, tracker: ChannelTracker) -> None:
    """Poke `tracker` after every successful write to the in-process hub's `/api/services/...`."""

    from quart import request

    @app.after_request
    async def poke_tracker(response: Any) -> Any:
        if (request.method in _HUB_WRITES and request.path.startswith("/api/services/")
                and 200 <= response.status_code < 300):
            tracker.poke()
        return response
