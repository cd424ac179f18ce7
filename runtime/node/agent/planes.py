"""What a node's links to several planes share: the newest leader epoch seen, and replica reports.

Several planes on one state (docs/scale-out.md): the node keeps one connection to each. Only the
scheduler leader assigns; every plane routes requests, so each must hear every replica's state:
a report goes out on every link that is up, whichever plane's assign caused it.

Fencing: each acquisition of the scheduler lease bumps its epoch and every assign carries it. A
leader paused past its lease (SIGSTOP, a long pause, a partition) may still send an assign before
it notices: the node refuses it, having seen the new leader's higher epoch on another link.

Job reports go out on one link only (runtime/node/agent/jobs.py's outbox): the one the jobs
leader last sent an attempt or a cancel on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from runtime.control.messages import ReplicaReport

log = logging.getLogger("flowctl.node")
Report = Callable[[ReplicaReport], None]


class PlaneLinks:
    """Shared by a node's agents (one per plane): the assign fence and the report fan-out."""

    def __init__(self) -> None:
        self.highest = 0
        self._reporters: list[Report] = []
        self.jobs_mux: object = None  # the link job reports go out on: the last one a job message came in on

    def admit(self, epoch: int, plane: str) -> bool:
        """Whether an assign of `epoch` from `plane` may be applied (remembering a newer epoch)."""
        if epoch < self.highest:
            log.warning("refused an assign of epoch %d from %s: a newer leader's epoch %d was seen "
                        "(that plane lost its lease)", epoch, plane, self.highest)
            return False
        self.highest = epoch
        return True

    @contextmanager
    def attached(self, reporter: Report) -> Iterator[None]:
        """While a link is up, it hears every report."""
        self._reporters.append(reporter)
        try:
            yield
        finally:
            self._reporters.remove(reporter)

    def report(self, rep: ReplicaReport) -> None:
        """Send a replica's new state on every link that is up (the executor's callback)."""
        for reporter in list(self._reporters):
            reporter(rep)
