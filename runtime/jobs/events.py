"""Things that happen in flowctl that event-triggered jobs fire on, and which jobs they fire."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.jobs.model import EventKind, EventTrigger


@dataclass(frozen=True)
class Event:
    """Something that happened in flowctl that event-triggered jobs may fire on."""

    kind: EventKind
    tenant: str | None = None  # None: every tenant's jobs may fire (a service published)
    service: str | None = None
    job: str | None = None  # job_run_finished: the job whose run finished
    status: str | None = None  # job_run_finished: that run's final state


def matches(trigger: EventTrigger, event: Event) -> bool:
    """Whether `event` fires a job with this event trigger."""
    if trigger.event != event.kind:
        return False
    if event.kind == "job_run_finished":
        wanted = {"any": {"succeeded", "failed", "timed_out", "cancelled"}, "succeeded": {"succeeded"},
                  "failed": {"failed", "timed_out"}}[trigger.status]
        return trigger.job == event.job and event.status in wanted
    return trigger.service is None or trigger.service == event.service
