"""A job definition in memory: frozen dataclasses built only by `runtime.jobs.schema`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Duration = float  # seconds
ParamType = Literal["string", "int", "float", "bool"]
ParamValue = str | int | float | bool
Concurrency = Literal["allow", "forbid", "replace"]
MisfirePolicy = Literal["skip", "run_once", "catch_up"]
RoutingStrategy = Literal["least_loaded", "round_robin", "consistent_hash", "failover", "broadcast"]
EventKind = Literal["service_published", "deployment_ready", "deployment_failed", "job_run_finished"]
InferenceEndpoint = Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]


@dataclass(frozen=True)
class CronTrigger:
    """Fire on a 5-field (minute first) or 6-field (second first) cron expression, in `timezone`."""

    cron: str
    timezone: str = "UTC"
    kind: Literal["cron"] = "cron"


@dataclass(frozen=True)
class IntervalTrigger:
    """Fire every `every` seconds, at `start_at + k * every` (epoch seconds; 0 by default)."""

    every: int
    start_at: int = 0
    kind: Literal["interval"] = "interval"


@dataclass(frozen=True)
class OnceTrigger:
    """Fire once, at `at` (epoch seconds)."""

    at: int
    kind: Literal["once"] = "once"


@dataclass(frozen=True)
class ManualTrigger:
    """Fire only when asked (CLI/API), with parameter overrides."""

    kind: Literal["manual"] = "manual"


@dataclass(frozen=True)
class WebhookTrigger:
    """Fire on a POST signed with HMAC-SHA256 over timestamp and body (secret named, not stored)."""

    secret_name: str
    replay_window: int = 300
    kind: Literal["webhook"] = "webhook"


@dataclass(frozen=True)
class EventTrigger:
    """Fire on a flowctl event: a service published, a deployment ready/failed, a job run finished."""

    event: EventKind
    service: str | None = None  # service_published, deployment_*: which service (None: any)
    job: str | None = None  # job_run_finished: which job of the same tenant
    status: Literal["succeeded", "failed", "any"] = "any"  # job_run_finished
    kind: Literal["event"] = "event"


Trigger = CronTrigger | IntervalTrigger | OnceTrigger | ManualTrigger | WebhookTrigger | EventTrigger
TIMED_TRIGGERS = (CronTrigger, IntervalTrigger, OnceTrigger)


@dataclass(frozen=True)
class Retries:
    """How often a failed, timed-out or lost step attempt is tried again, and how long to wait."""

    max_attempts: int = 1
    backoff: Duration = 1.0  # before attempt 2; doubles for each later attempt
    backoff_max: Duration = 300.0
    jitter: float = 0.1  # each wait is scaled by a random factor in [1 - jitter, 1 + jitter]


@dataclass(frozen=True)
class Routing:
    """Which node(s) run a step: a strategy, and its key (consistent_hash) or order (failover)."""

    strategy: RoutingStrategy = "least_loaded"
    key: str | None = None
    order: tuple[str, ...] = ()


@dataclass(frozen=True)
class Policies:
    """A job's policies; a step may override retries, routing and timeout."""

    concurrency: Concurrency = "allow"
    misfire: MisfirePolicy = "run_once"
    catch_up_max: int = 1  # misfire catch_up: at most this many missed fires run
    starting_deadline: Duration | None = None
    timeout: Duration | None = None  # per step attempt, unless the step says otherwise
    retries: Retries = field(default_factory=Retries)
    routing: Routing = field(default_factory=Routing)
    history_succeeded: int = 10
    history_failed: int = 10
    suspend: bool = False


@dataclass(frozen=True)
class Parameter:
    """A declared parameter: its type, default and description."""

    type: ParamType
    default: ParamValue | None = None  # None: required at trigger time
    description: str = ""


@dataclass(frozen=True)
class Resources:
    """What a command step needs on its node."""

    cpu: float = 0.0
    memory_mb: int = 0
    gpu: int = 0


@dataclass(frozen=True)
class CommandStep:
    """Run `command` on a node inside the installed bundle `service` (NAME@VERSION or @stable)."""

    name: str
    service: str
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    resources: Resources = field(default_factory=Resources)
    selector: tuple[tuple[str, str], ...] = ()
    needs: tuple[str, ...] = ()
    timeout: Duration | None = None
    retries: Retries | None = None
    routing: Routing | None = None
    kind: Literal["command"] = "command"


@dataclass(frozen=True)
class InferenceInput:
    """An inference step's input JSONL: an earlier step's artifact, an uploaded file, or inline lines."""

    artifact: str | None = None  # "STEP:PATH"
    file: str | None = None  # an uploaded file's id
    inline: tuple[str, ...] = ()  # JSON request bodies, one per line


@dataclass(frozen=True)
class InferenceStep:
    """A batch of model calls through the dispatcher: one request body per input line."""

    name: str
    endpoint: InferenceEndpoint
    input: InferenceInput
    model: str | None = None  # fills lines that name no model
    concurrency: int = 4
    needs: tuple[str, ...] = ()
    timeout: Duration | None = None
    retries: Retries | None = None
    routing: Routing | None = None
    kind: Literal["inference"] = "inference"


Step = CommandStep | InferenceStep


@dataclass(frozen=True)
class JobSpec:
    """A whole job definition, validated: its steps are in an order where needs come first."""

    tenant: str
    name: str
    trigger: Trigger
    steps: tuple[Step, ...]
    description: str = ""
    policies: Policies = field(default_factory=Policies)
    parameters: tuple[tuple[str, Parameter], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    document: str = field(default="", compare=False, repr=False)  # the definition as JSON, stored

    def step(self, name: str) -> Step:
        """The step called `name` (KeyError if none)."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def timeout_of(self, step: Step) -> Duration | None:
        """The step's attempt timeout: its own, else the job's."""
        return step.timeout if step.timeout is not None else self.policies.timeout

    def retries_of(self, step: Step) -> Retries:
        """The step's retry policy: its own, else the job's."""
        return step.retries or self.policies.retries

    def routing_of(self, step: Step) -> Routing:
        """Which node runs the step: its own routing, else the job's."""
        return step.routing or self.policies.routing

    @property
    def timed(self) -> bool:
        """True when the clock fires this job (cron, interval, once)."""
        return isinstance(self.trigger, TIMED_TRIGGERS)
