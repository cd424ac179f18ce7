"""Job attempts bound for one node in one scheduling round, sent in one control message.

A cron burst starts hundreds of runs in one round, and each run's task reaches `send` in that
same round (their store calls were one trip: `runtime.jobs.offload`). The first sender for a
node waits until the round is over, then sends what the node's senders queued meanwhile: one
`job_attempts` message (runtime.control.job_batches) to a node whose hello announced the
`job_batch` feature, one `job_attempt` each, in order, to a node that did not (an older node).
Each attempt still carries its epoch, and the node fences each on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import trio

from runtime.control import messages
from runtime.control.job_batches import pack_attempts, unpack_attempts
from runtime.control.messages import JobAttempt, JobAttempts
from runtime.tunnel import Mux, TunnelError
from runtime.tunnel.batch import until_quiet

GATHER_ROUNDS = 4  # scheduling rounds the first sender waits at most for the others to queue theirs


class _Round:
    """The attempts queued for one node until its first sender sends them."""

    def __init__(self) -> None:
        self.attempts: list[JobAttempt] = []
        self.sent = trio.Event()
        self.error: TunnelError | None = None
        self.failed_from = 0  # the attempts from this index on were not queued (`error` says why)


class AttemptSends:
    """`await sends.send(node_id, attempt)`: queued on the node's link with the others of its round."""

    def __init__(self, mux_for: Callable[[str], Mux | None], batching: Callable[[str], bool]):
        self._mux_for = mux_for
        self._batching = batching  # whether the node announced job_batch
        self._rounds: dict[str, _Round] = {}

    async def send(self, node_id: str, attempt: JobAttempt) -> None:
        """Queue `attempt` on the node's control link (with the others sent to it this round).

        Cancellation: not sent once cancelled before the call; once queued it is sent.
        Error handling: TunnelError when the node is not connected (nothing was sent to it).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        batch = self._rounds.get(node_id)
        first = batch is None
        if batch is None:
            batch = self._rounds[node_id] = _Round()
        index = len(batch.attempts)
        batch.attempts.append(attempt)
        with trio.CancelScope(shield=True):
            if first:
                await self._gather(batch)
                del self._rounds[node_id]
                try:
                    await self._send_all(node_id, batch)
                finally:
                    batch.sent.set()
            else:
                await batch.sent.wait()
        if batch.error is not None and index >= batch.failed_from:
            raise TunnelError(str(batch.error))

    async def _gather(self, batch: _Round) -> None:
        """Yield while the tasks of this round still queue attempts; two quiet rounds end it."""
        await until_quiet(lambda: len(batch.attempts), rounds=GATHER_ROUNDS)

    async def _send_all(self, node_id: str, batch: _Round) -> None:
        """Queue the round's attempts on the node's link; those not queued are marked failed."""
        batch.failed_from, batch.error = await self.send_round(node_id, batch.attempts)

    async def send_round(self, node_id: str, attempts: list[JobAttempt]) -> tuple[int, TunnelError | None]:
        """Queue `attempts` on the node's link now (in one message to a node that batches): how
        many were queued, and why the others were not (the node is not connected, or its link
        closed: what was queued before counts as sent)."""
        mux = self._mux_for(node_id)
        if mux is None:
            return 0, TunnelError(f"node {node_id} is not connected")
        packed: Sequence[JobAttempt | JobAttempts] = attempts
        if len(attempts) > 1 and self._batching(node_id):
            packed = pack_attempts(attempts)
        done = 0
        try:
            for message in packed:
                await mux.send_control(messages.encode(message))
                done += 1
        except TunnelError as e:
            return sum(1 if isinstance(m, JobAttempt) else _count(m) for m in packed[:done]), e
        return len(attempts), None


def _count(message: JobAttempts) -> int:
    return len(unpack_attempts(message)[0])
