"""A node's live link as the scheduler holds it, and a route from a model to a ready replica."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from runtime.control.messages import Assign
from runtime.scheduler.reconcile import Replica
from runtime.tunnel import Mux

AssignSender = Callable[[Assign], Awaitable[None]]


@dataclass(frozen=True)
class NodeLink:
    """One node's live connection: how to tell it things, reach its workers, and close it.

    `close(reason, code)` makes the connection send a fatal error with that code and end.
    """

    epoch: int
    send: AssignSender
    mux: Mux
    token_id: str
    close: Callable[[str, str], None]


@dataclass(frozen=True)
class Route:
    """A ready replica that serves a model, and the live link to its node."""

    replica: Replica
    node_id: str
    max_concurrency: int
    link: NodeLink
