"""Jobs: seed 004's task orchestrator (definitions, fire times, the run store, the engine).

See docs/jobs.md for the model. The plane runs it as its `jobs` role (plane_role.py), with the
/api/v1/ HTTP API (routes.py); `flowctl jobs` is the CLI.
"""

from runtime.jobs.dispatch import AttemptOrder, Outcome, StepExecutor
from runtime.jobs.engine import Event, JobEngine
from runtime.jobs.errors import (
    IllegalTransition,
    JobDefinitionError,
    JobError,
    LeaseLost,
    ParameterError,
    StaleEpoch,
    UnknownJob,
)
from runtime.jobs.executors import InProcessExecutor
from runtime.jobs.firetimes import fires_between, next_fire
from runtime.jobs.lease import EpochFence, Lease, SoloLease, SqliteLease
from runtime.jobs.local_command import LocalCommandExecutor
from runtime.jobs.model import JobSpec
from runtime.jobs.node_executor import NodeExecutor
from runtime.jobs.records import AttemptRecord, JobRecord, RunRecord, StepRecord
from runtime.jobs.schema import load_job_file, parse_job, parse_job_text, resolve_parameters
from runtime.jobs.store import RunStore, scheduled_run_id

__all__ = [
    "AttemptOrder", "AttemptRecord", "EpochFence", "Event", "IllegalTransition", "InProcessExecutor",
    "JobDefinitionError", "JobEngine", "JobError", "JobRecord", "JobSpec", "Lease", "LeaseLost",
    "LocalCommandExecutor", "NodeExecutor", "Outcome", "ParameterError", "RunRecord", "RunStore", "SoloLease",
    "SqliteLease", "StaleEpoch", "StepExecutor", "StepRecord", "UnknownJob", "fires_between",
    "load_job_file", "next_fire", "parse_job", "parse_job_text", "resolve_parameters", "scheduled_run_id",
]
