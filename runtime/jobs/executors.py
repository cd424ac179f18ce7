"""Step executors that run in the plane's own process (tests, and embedded use)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from runtime.jobs import dispatch
from runtime.jobs.dispatch import AttemptOrder, Outcome, Started, StepExecutor
from runtime.jobs.errors import JobError
from runtime.jobs.lease import EpochFence

Handler = Callable[[AttemptOrder], Awaitable[Outcome | None]]


class InProcessExecutor:
    """Runs each attempt as a call of `handler` (None back means succeeded; an exception means
    failed with its message), behind an epoch fence as a node would be."""

    def __init__(self, handler: Handler, *, node: str = "local"):
        self.handler, self.node = handler, node
        self.fence = EpochFence()
        self.orders: list[AttemptOrder] = []  # every order accepted, in order

    async def run_attempt(self, order: AttemptOrder, started: Started) -> Outcome:
        """Check the epoch, then call the handler."""
        self.fence.check(order.epoch)
        self.orders.append(order)
        await started(self.node)
        try:
            outcome = await self.handler(order)
        except Exception as e:
            return Outcome("failed", reason=str(e) or repr(e), node=self.node)
        return outcome or Outcome("succeeded", node=self.node)

    async def recover(self, order: AttemptOrder, started: Started) -> Outcome | None:
        """Nothing survives this process: a previous engine's attempt is lost."""
        return None


class ByKindExecutor:
    """Sends each attempt to the executor of its step's kind (command steps to nodes, inference
    steps to the plane's dispatcher); a kind with none here fails the attempt saying so."""

    def __init__(self, executors: Mapping[str, StepExecutor]):
        self.executors = dict(executors)

    def _for(self, order: AttemptOrder) -> StepExecutor:
        kind = order.step.kind
        executor = self.executors.get(kind)
        if executor is None:
            raise JobError(f"{kind} steps cannot run in this plane")
        return executor

    def holds_itself(self, order: AttemptOrder) -> bool:
        """Whether the kind's executor waits for the order's `not_before` itself."""
        executor = self.executors.get(order.step.kind)
        return executor is not None and dispatch.holds_itself(executor, order)

    async def run_attempt(self, order: AttemptOrder, started: Started) -> Outcome:
        """Run the attempt with its kind's executor."""
        return await self._for(order).run_attempt(order, started)

    async def recover(self, order: AttemptOrder, started: Started) -> Outcome | None:
        """Re-attach the attempt with its kind's executor."""
        return await self._for(order).recover(order, started)
