"""What the run store hands out: jobs, runs, steps and attempts as frozen records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runtime.jobs.model import JobSpec


@dataclass(frozen=True)
class JobRecord:
    """A stored job: its definition, version (bumped on each change) and firing cursor."""

    job_id: str
    spec: JobSpec
    version: int
    suspended: bool
    planned_until: int
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class RunRecord:
    """A stored run (without its definition snapshot; `RunStore.run_spec` reads that)."""

    run_id: str
    job_id: str
    tenant: str
    job_name: str
    fire_time: int | None
    due_at: float
    cause: str
    state: str
    reason: str
    params: dict[str, Any]
    version: int
    created_at: float
    started_at: float | None
    finished_at: float | None


@dataclass(frozen=True)
class StepRecord:
    """One step of one run."""

    run_id: str
    step: str
    state: str
    attempts: int
    reason: str


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt at one step; `epoch` is the leader epoch it was dispatched under."""

    run_id: str
    step: str
    attempt: int
    state: str
    epoch: int | None
    node: str | None
    exit_code: int | None
    reason: str
    created_at: float
    updated_at: float
    late_result: str | None = None  # JSON: a result reported after the attempt was settled


@dataclass(frozen=True)
class NewRun:
    """A run to materialise: scheduled (a `fire_time`) or asked for (None)."""

    due_at: float
    cause: str
    fire_time: int | None = None
    state: str = "pending"
    reason: str = ""
    params: str = "{}"
