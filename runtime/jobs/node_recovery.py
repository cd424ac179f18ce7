"""Recovering a `NodeExecutor`'s attempts after a plane restart or a change of job leader.

An attempt a previous plane process dispatched waits for its node to report it running again
(nodes report what still runs after each welcome, before their first heartbeat). A plane that
took the job lease over from another first claims the node's job link (`_claim`): its running
list went to the old leader. A node that is back without the attempt is sent it again as a
`resend` (JobAttempt.resend), so an attempt whose end died with the old leader is neither lost
nor run twice; no node within `reattach_s` means lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from runtime.control import messages
from runtime.control.messages import JobAttempt, JobCancel, JobReport
from runtime.jobs.dispatch import AttemptOrder, Outcome, Started
from runtime.jobs.model import CommandStep, Resources
from runtime.jobs.node_choice import Key, LiveAttempts, _Live
from runtime.jobs.store import RunStore
from runtime.tunnel import TunnelError

if TYPE_CHECKING:
    from runtime.scheduler.service import Scheduler

CLAIM_BEATS = 2  # heartbeats after a claim before its running list counts as complete (the first may be in flight)


@dataclass
class _Claim:
    """A claim of one node's job link under one epoch: done once CLAIM_BEATS heartbeats followed it."""

    epoch: int
    beats: int = CLAIM_BEATS
    done: trio.Event = field(default_factory=trio.Event)
    sent: bool = True  # False: the node is not connected here (it reports on its next welcome)


class NodeRecovery:
    """The recovering half of `NodeExecutor`, which sets the state and the methods declared here."""

    scheduler: Scheduler
    store: RunStore
    reattach_s: float
    _epoch: int
    _live: LiveAttempts
    _unclaimed: dict[Key, tuple[str, JobReport]]
    _heard: set[str]
    _claims: dict[str, _Claim]
    _changed: trio.Event
    run_attempt: Callable[..., Awaitable[Outcome]]
    _send: Callable[[str, JobAttempt | JobCancel], Awaitable[None]]
    _wait: Callable[[Key, _Live, Started], Awaitable[Outcome]]

    async def recover_one(self, order: AttemptOrder, started: Started) -> Outcome | None:
        """Re-attach a (not broadcast) attempt a previous plane process dispatched, or None (lost)."""
        attempts = await trio.to_thread.run_sync(self.store.attempts, order.run_id, order.step.name)
        node = next((a.node for a in attempts if a.attempt == order.attempt), None)
        if not node:
            return None
        outcome = await self.reattach((order.run_id, order.step.name, order.attempt, None), node, order, started)
        if outcome is None and self._knows_resend(node):
            # Connected, yet it did not report the attempt running: it never got it, it ended it and
            # its report went to the plane that died, or an earlier agent process of it ran it. Sent
            # again as a resend, the node runs it only in the first case (JobAttempt.resend).
            return await self.run_attempt(order, started, node=node, resend=True)
        return outcome

    async def reattach(self, key: Key, node: str, order: AttemptOrder, started: Started) -> Outcome | None:
        """Wait for `node` to report `key` running again (then for its end), or None (lost)."""
        step = order.step
        live = self._live[key] = _Live(node, step.resources if isinstance(step, CommandStep) else Resources())
        try:
            if (seen := self._unclaimed.pop(key, None)) is not None and seen[0] == node:
                live.put(seen[1])
            with trio.move_on_after(self.reattach_s):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._lost_unless_reported, node, live, order.epoch)
                    outcome = await self._wait(key, live, started)
                    nursery.cancel_scope.cancel()
                return None if outcome.state == "lost" and outcome.reason == "" else outcome
            return None
        finally:
            self._live.pop(key, None)

    async def _lost_unless_reported(self, node: str, live: _Live, epoch: int) -> None:
        if not await self._claim(node, epoch):
            while node not in self._heard:
                await self._changed.wait()
        if not live.reported:  # what it runs came before its heartbeat, on the same connection
            live.put("unreported")

    async def _claim(self, node: str, epoch: int) -> bool:
        """Have `node` send its job reports to this plane, then wait until what it runs has come.

        Several planes: the node reports on the link the jobs leader last used, so a plane that
        just took the lease over heard nothing of what the node runs (it went to the dead leader),
        yet heard its heartbeats all along. Any job message switches the node's reports to the link
        it came on and makes it flush what it buffered and report what still runs; a cancel of
        attempt 0 (which names no attempt) does only that, and raises the node's fence to `epoch`.
        False when the node is not connected here: it reports on its next welcome, before its first
        heartbeat, as after a plane restart.
        """
        claim = self._claims.get(node)
        if claim is None or claim.epoch != epoch:
            claim = self._claims[node] = _Claim(epoch)
            try:
                await self._send(node, JobCancel("", "", 0, epoch=epoch, reason="the job leader claims this link"))
            except TunnelError:
                claim.sent = False
                claim.done.set()
                if self._claims.get(node) is claim:
                    del self._claims[node]
        await claim.done.wait()
        return claim.sent

    def _knows_resend(self, node_id: str) -> bool:
        node = self.scheduler.registry.get(node_id)
        return (node is not None and self.scheduler.mux_for(node_id) is not None
                and messages.JOB_RESEND in node.hello.features)
