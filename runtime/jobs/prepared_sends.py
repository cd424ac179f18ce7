"""Attempts prepared ahead of their due time, sent at it by one task: a burst in a few steps.

A cron burst's prepared attempts share one due instant. Had each run's task woken at it to
record its attempt dispatched and send it, the 167 tasks of a burst would each take several
scheduling rounds in turn (measured: 10-15 ms more lateness than the sends alone). Instead each
task hands its attempt over (`send`) and waits; at the instant one task records them all
dispatched in one store call (before anything leaves: a plane that dies after it asks the node
about the attempt, never re-runs it blind), then sends each node's in one message
(`AttemptSends.send_round`), then wakes the waiting tasks.

A task cancelled before the instant withdraws its attempt (nothing was recorded or sent); one
cancelled once its attempt was taken waits until it was sent, so the cancellation that follows
stops it on its node.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import trio

from runtime.control.messages import JobAttempt
from runtime.jobs.errors import JobError
from runtime.jobs.node_sends import AttemptSends
from runtime.tunnel import TunnelError

Mark = Callable[[list[tuple[str, str, int]]], Awaitable[None]]  # record (run, step, attempt)s dispatched


class _Entry:
    __slots__ = ("node", "message", "error", "taken", "done")

    def __init__(self, node: str, message: JobAttempt):
        self.node, self.message = node, message
        self.error: Exception | None = None
        self.taken = False
        self.done = trio.Event()


class PreparedSends:
    """`await prepared.send(at, node, attempt)`: recorded dispatched and sent at `at` (Trio's
    clock) with the other attempts due then; `run()` must run meanwhile."""

    def __init__(self, sends: AttemptSends, mark: Mark):
        self._sends, self._mark = sends, mark
        self._due: dict[float, list[_Entry]] = {}
        self._news = trio.Event()

    async def send(self, at: float, node: str, message: JobAttempt) -> None:
        """Hand `message` over to be sent to `node` at `at` (at once when past); returns once sent.

        Cancellation: withdrawn while not yet taken (nothing recorded or sent); once taken it is
        sent, and this returns without raising so that the caller's next checkpoint (the
        cancellation still pending) stops it on its node.
        Error handling: TunnelError when the node was not connected (nothing sent to it);
        JobError when the attempts could not be recorded dispatched (nothing sent).
        """
        entry = _Entry(node, message)
        self._due.setdefault(at, []).append(entry)
        self._news.set()
        try:
            await entry.done.wait()
        except trio.Cancelled:
            if not entry.taken:
                group = self._due.get(at, [])
                group.remove(entry)
                if not group:
                    self._due.pop(at, None)
                raise
            with trio.CancelScope(shield=True):
                await entry.done.wait()
            # Not re-raised: it was sent, and the scope stays cancelled for the caller to stop it.
        if entry.error is not None:
            raise entry.error

    async def run(self) -> None:
        """Send each instant's attempts at it, until cancelled (then those waiting are told)."""
        try:
            await self._run()
        finally:
            for group in self._due.values():
                for entry in group:
                    entry.error = JobError("not sent: the plane is stopping")
                    entry.done.set()
            self._due.clear()

    async def _run(self) -> None:
        while True:
            self._news = trio.Event()
            at = min(self._due, default=math.inf)
            if at > trio.current_time():
                with trio.move_on_at(at):
                    await self._news.wait()  # a new, maybe earlier, instant
                continue
            now = trio.current_time()
            group = [entry for when in sorted(self._due) if when <= now for entry in self._due.pop(when)]
            for entry in group:
                entry.taken = True
            with trio.CancelScope(shield=True):  # taken attempts are recorded and sent, or told why not
                await self._send_group(group)

    async def _send_group(self, group: list[_Entry]) -> None:
        try:
            try:
                await self._mark([(e.message.run_id, e.message.step, e.message.attempt) for e in group])
            except Exception as exc:  # the store is away: none is sent
                for entry in group:
                    entry.error = JobError(f"could not record the attempt dispatched: {exc}")
                return
            by_node: dict[str, list[_Entry]] = {}
            for entry in group:
                by_node.setdefault(entry.node, []).append(entry)
            for node, entries in by_node.items():
                try:
                    sent, error = await self._sends.send_round(node, [e.message for e in entries])
                except Exception as exc:  # never this task's end: the other nodes' are sent all the same
                    sent, error = 0, TunnelError(f"could not send to node {node}: {exc!r}")
                for entry in entries[sent:]:
                    entry.error = TunnelError(str(error))
        finally:
            for entry in group:
                entry.done.set()
