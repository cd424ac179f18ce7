"""Which nodes are connected, and which are alive: joining -> ready -> lost -> gone.

A node is `ready` from its hello until it falls silent: no heartbeat for
`lost_after` seconds (or its connection closes) makes it `lost`, and its replicas
are placed elsewhere; `gone_after` seconds later it is `gone` and forgotten by
routing. A node that reconnects (or simply resumes heartbeating, as a node
unfrozen after SIGSTOP does) is `ready` again under a new connection epoch;
messages from an older connection of the same node are ignored.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from runtime.control.messages import Heartbeat, Hello

DEFAULT_LOST_AFTER = 15.0
DEFAULT_GONE_AFTER = 300.0
SWEEP_INTERVAL = 0.5


class NodeState(enum.StrEnum):
    """Where a node is in its life."""

    JOINING = "joining"
    READY = "ready"
    LOST = "lost"
    GONE = "gone"


@dataclass
class NodeRecord:
    """Everything the plane knows about one node."""

    node_id: str
    name: str
    hello: Hello
    state: NodeState = NodeState.JOINING
    epoch: int = 0
    last_seen: float = 0.0
    state_since: float = 0.0
    free_ram_mb: int = 0
    outstanding: int = 0
    heartbeats: int = 0
    labels: dict[str, str] = field(default_factory=dict)


StateListener = Callable[[NodeRecord, NodeState], None]


class NodeRegistry:
    """The live nodes of a cluster, with heartbeat-based failure detection.

    Time comes from `trio.current_time()`, so tests drive it with autojump_clock.
    Listeners are called synchronously with (node, previous_state) on every change.
    """

    def __init__(self, *, lost_after: float = DEFAULT_LOST_AFTER, gone_after: float = DEFAULT_GONE_AFTER):
        if lost_after <= 0 or gone_after <= 0:
            raise ValueError("lost_after and gone_after must be positive")
        self.lost_after = lost_after
        self.gone_after = gone_after
        self._nodes: dict[str, NodeRecord] = {}
        self._epochs = 0
        self._listeners: list[StateListener] = []
        self.generation = 0  # bumped on every connect and state change: caches of `nodes()` compare it

    def subscribe(self, listener: StateListener) -> None:
        """Call `listener(node, previous_state)` on every state change."""
        self._listeners.append(listener)

    def get(self, node_id: str) -> NodeRecord | None:
        """The node's record, or None."""
        return self._nodes.get(node_id)

    def nodes(self, *states: NodeState) -> list[NodeRecord]:
        """The nodes in any of `states` (all when none given), by name."""
        found = [n for n in self._nodes.values() if not states or n.state in states]
        return sorted(found, key=lambda n: (n.name, n.node_id))

    def connect(self, hello: Hello) -> int:
        """Register a (re)connecting node; returns the epoch its later messages must carry."""
        now = trio.current_time()
        self._epochs += 1
        self.generation += 1  # labels and name may change with a reconnect, the state staying ready
        record = self._nodes.get(hello.node_id)
        if record is None:
            record = NodeRecord(node_id=hello.node_id, name=hello.name, hello=hello, state_since=now)
            self._nodes[hello.node_id] = record
        record.hello = hello
        record.name = hello.name
        record.labels = dict(hello.labels)
        record.epoch = self._epochs
        record.last_seen = now
        record.free_ram_mb = hello.ram_mb
        self._set(record, NodeState.READY, now)
        return record.epoch

    def heartbeat(self, node_id: str, epoch: int, beat: Heartbeat) -> bool:
        """Record a heartbeat; False if it came from a stale connection or an unknown node."""
        record = self._nodes.get(node_id)
        if record is None or record.epoch != epoch:
            return False
        now = trio.current_time()
        record.last_seen = now
        record.free_ram_mb = beat.free_ram_mb
        record.outstanding = beat.outstanding
        record.heartbeats += 1
        if record.state in (NodeState.LOST, NodeState.GONE):
            self._set(record, NodeState.READY, now)
        return True

    def disconnect(self, node_id: str, epoch: int) -> None:
        """The node's connection closed: it is lost at once (unless a newer one replaced it)."""
        record = self._nodes.get(node_id)
        if record is not None and record.epoch == epoch and record.state is NodeState.READY:
            self._set(record, NodeState.LOST, trio.current_time())

    def sweep(self) -> None:
        """Apply the timeouts: silent ready nodes become lost, long-lost ones gone."""
        now = trio.current_time()
        for record in list(self._nodes.values()):
            if record.state is NodeState.READY and now - record.last_seen >= self.lost_after:
                self._set(record, NodeState.LOST, now)
            elif record.state is NodeState.LOST and now - record.state_since >= self.gone_after:
                self._set(record, NodeState.GONE, now)
                del self._nodes[record.node_id]

    async def run_sweeper(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sweep until cancelled; detection lags a silence by at most SWEEP_INTERVAL."""
        task_status.started()
        while True:
            self.sweep()
            await trio.sleep(SWEEP_INTERVAL)

    def _set(self, record: NodeRecord, state: NodeState, now: float) -> None:
        previous = record.state
        if previous is state:
            return
        self.generation += 1
        record.state = state
        record.state_since = now
        for listener in self._listeners:
            listener(record, previous)
