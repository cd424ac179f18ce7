"""A node's job messages to the plane: sent through the current control session, buffered
(bounded) between sessions, and batched (`job_reports`) for a plane that takes batches.

The reports of a scheduling round (a burst of short steps ending together) go in one control
message: the first sender of the round waits one round, then sends what the others queued,
in order, each run of reports packed by runtime.control.job_batches; log pieces go one by one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import trio

from runtime.control import messages
from runtime.control.job_batches import pack_reports
from runtime.control.messages import JobLog, JobReport, JobReports
from runtime.tunnel import Mux, TunnelError

MAX_BUFFERED = 1000  # messages kept while the plane is away; the oldest log pieces go first


class JobOutbox:
    """A runner's `send`: through the current control session, buffered (bounded) while there
    is none, flushed in order when the next session starts. To a plane whose welcome announced
    `job_batch`, the reports sent in one scheduling round go in one `job_reports` message."""

    def __init__(self, *, max_buffered: int = MAX_BUFFERED):
        self.max_buffered = max_buffered
        self._mux: Mux | None = None
        self._batch = False  # the plane of this session takes job_reports
        self._buffer: deque[JobReport | JobLog] = deque()
        self._pending: list[JobReport | JobLog] = []  # this round's, for the flushing sender to send
        self._flushing = False

    async def send(self, message: JobReport | JobLog) -> None:
        """Send now (with the others of this round, batching), or keep for the next session."""
        if self._mux is None or not self._batch:
            if self._mux is not None:
                try:
                    await self._mux.send_control(messages.encode(message))
                    return
                except TunnelError:
                    self._mux = None
            self._keep([message])
            return
        self._pending.append(message)
        if self._flushing:
            await trio.lowlevel.checkpoint()
            return  # the first sender of this round sends it
        self._flushing = True
        try:
            with trio.CancelScope(shield=True):
                await trio.lowlevel.checkpoint()  # the other senders of this round queue theirs
                while self._pending:
                    queue, self._pending = self._pending, []
                    await self._send_all(queue)
        finally:
            self._flushing = False

    async def _send_all(self, queue: list[JobReport | JobLog]) -> None:
        """Send `queue` in order, each run of reports batched; what cannot go is kept."""
        sent = 0
        try:
            for group in _runs(queue):
                if self._mux is None:
                    break
                for message in _packed(group, self._batch):
                    await self._mux.send_control(messages.encode(message))
                sent += len(group)
        except TunnelError:
            self._mux = None
        self._keep(queue[sent:])

    def _keep(self, kept: list[JobReport | JobLog]) -> None:
        self._buffer.extend(kept)
        while len(self._buffer) > self.max_buffered:
            # Reports decide outcomes; log pieces are only text: drop the oldest log piece first.
            log_piece = next((m for m in self._buffer if isinstance(m, JobLog)), None)
            self._buffer.remove(log_piece if log_piece is not None else self._buffer[0])

    async def attach(self, mux: Mux, running: list[JobReport], *, batch: bool = False) -> None:
        """A session started: what was buffered, then `running` (so the plane re-attaches);
        `batch`: its plane takes job_reports."""
        self._mux = None
        queue = [*self._buffer, *running]
        self._buffer.clear()
        for group in _runs(queue):
            for message in _packed(group, batch):
                await mux.send_control(messages.encode(message))
        while self._buffer:  # sent meanwhile
            await mux.send_control(messages.encode(self._buffer.popleft()))
        self._mux, self._batch = mux, batch

    def detach(self, mux: Mux) -> None:
        """That session ended: buffer from now on."""
        if self._mux is mux:
            self._mux = None


def _runs(queue: list[JobReport | JobLog]) -> list[list[JobReport | JobLog]]:
    """`queue` cut where it turns from reports to log pieces or back (order kept)."""
    groups: list[list[JobReport | JobLog]] = []
    for message in queue:
        if groups and isinstance(message, JobReport) and isinstance(groups[-1][0], JobReport):
            groups[-1].append(message)
        else:
            groups.append([message])
    return groups


def _packed(group: list[JobReport | JobLog], batch: bool) -> Sequence[JobReport | JobReports | JobLog]:
    """A run of reports as job_reports batches when the plane takes them; else as it is."""
    reports = [m for m in group if isinstance(m, JobReport)]
    return pack_reports(reports) if batch and len(reports) == len(group) else group
