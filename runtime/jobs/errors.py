"""The job orchestrator's errors: a bad definition, a refused state change, a stale leader."""

from __future__ import annotations

from runtime.errors import FlowError


class JobError(FlowError):
    """Base of the job orchestrator's errors."""


class JobDefinitionError(JobError):
    """A job definition is invalid; `problems` holds each `field.path: what is wrong`."""

    def __init__(self, problems: list[str], *, source: str | None = None):
        self.problems = list(problems)
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__(prefix + "; ".join(self.problems))


class ParameterError(JobError):
    """Parameter overrides for a run do not fit the job's declared parameters."""


class UnknownJob(JobError):
    """No job of that name in that tenant (or no run of that id)."""


class IllegalTransition(JobError):
    """A run or step attempt was asked to move to a state its current state cannot reach."""

    def __init__(self, what: str, current: str, wanted: str):
        self.what, self.current, self.wanted = what, current, wanted
        super().__init__(f"{what}: cannot go from {current!r} to {wanted!r}")


class StaleEpoch(JobError):
    """Work carried a leader epoch older than one already seen: a deposed leader's dispatch."""

    def __init__(self, epoch: int, current: int):
        self.epoch, self.current = epoch, current
        super().__init__(f"refused a dispatch from leader epoch {epoch}; epoch {current} is current")


class LeaseLost(JobError):
    """The job leader's lease expired or was taken by another plane."""
