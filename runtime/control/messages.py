"""The control protocol between a node and the control plane.

Control messages travel as JSON text messages on the node's WebSocket (binary
messages on the same socket are tunnel frames, see runtime.tunnel). Each message
is an object with a "type" tag; unknown fields are ignored so either side can be
upgraded first, unknown types are an error.

    node -> plane   hello, heartbeat, status, local, job_report, job_reports, job_log
    plane -> node   welcome, assign, error, local_verdict, job_attempt, job_attempts, job_cancel

Features: a hello and a welcome list what their sender understands beyond the messages every
version has (an older peer sends none and ignores the field); a side sends a batch form
(`job_attempts`, `job_reports`: runtime.control.job_batches) only to a peer that listed `job_batch`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

MAX_MESSAGE_BYTES = 1024 * 1024
JOB_BATCH = "job_batch"  # the feature: job_attempts / job_reports understood
# The feature: a job_attempt with `resend` set is answered from what the node knows of it (see JobAttempt).
JOB_RESEND = "job_resend"
FEATURES = (JOB_BATCH, JOB_RESEND)  # what this version announces, as a node (hello) and as a plane (welcome)
MAX_FEATURES = 32
Features = Annotated[tuple[Annotated[str, msgspec.Meta(max_length=64)], ...], msgspec.Meta(max_length=MAX_FEATURES)]

ReplicaState = Literal["pending", "installing", "starting", "ready", "failed", "stopping", "stopped"]


# A node's labels (`flowctl node join --label gpu=a100`), matched by job step selectors: keys
# and values as Kubernetes allows them, at most MAX_LABELS; a hostile hello fails to decode.
LABEL_KEY = r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$"
LABEL_VALUE = r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$"
MAX_LABELS = 32
RESERVED_LABELS = ("node", "node_id")  # a selector's names for the node's own name and id
Labels = Annotated[dict[Annotated[str, msgspec.Meta(pattern=LABEL_KEY)],
                        Annotated[str, msgspec.Meta(pattern=LABEL_VALUE)]],
                   msgspec.Meta(max_length=MAX_LABELS)]


class Gpu(msgspec.Struct, frozen=True):
    """One accelerator of a node; `index` is its CUDA index (PCI bus order), -1: its position."""

    name: str
    vram_mb: int = 0
    index: int = -1


class InstalledVersion(msgspec.Struct, frozen=True):
    """A service version present on a node's disk."""

    service_id: str
    version: str


class ReplicaReport(msgspec.Struct, frozen=True):
    """What a node says about one replica it was assigned."""

    replica_id: str
    service_id: str
    version: str
    attempt: int
    state: ReplicaState
    detail: str = ""
    models: tuple[str, ...] = ()
    max_concurrency: int = 1
    # The service's declared port, when the node found it in use by another process: the
    # plane places the replica elsewhere and avoids this node for that port for a while.
    busy_port: int = 0


class Hello(msgspec.Struct, frozen=True, tag="hello"):
    """First message of a node after connecting (and after every reconnect)."""

    node_id: str
    name: str
    agent_version: str
    cpu_count: int
    ram_mb: int
    gpus: tuple[Gpu, ...] = ()
    installed: tuple[InstalledVersion, ...] = ()
    replicas: tuple[ReplicaReport, ...] = ()
    labels: Labels = msgspec.field(default_factory=dict)
    features: Features = ()


# The tail of a replica's worker log a node sends with a heartbeat (the console's node page):
# bounded per line, per replica and per message, so a chatty worker cannot swell the control link.
MAX_LOG_LINES = 20
MAX_LOG_LINE = 500
MAX_LOG_REPLICAS = 64
WorkerLogTail = Annotated[tuple[Annotated[str, msgspec.Meta(max_length=MAX_LOG_LINE)], ...],
                          msgspec.Meta(max_length=MAX_LOG_LINES)]


class Heartbeat(msgspec.Struct, frozen=True, tag="heartbeat"):
    """Sent every heartbeat interval; its absence makes the node lost.

    `logs`: {replica id: the last lines of its worker log}, only for replicas whose tail changed
    since the last heartbeat on this connection (an older plane ignores the field).
    """

    seq: int
    free_ram_mb: int
    outstanding: int = 0
    logs: Annotated[dict[str, WorkerLogTail], msgspec.Meta(max_length=MAX_LOG_REPLICAS)] = msgspec.field(
        default_factory=dict)


class Status(msgspec.Struct, frozen=True, tag="status"):
    """A replica changed state."""

    replica: ReplicaReport


class Assignment(msgspec.Struct, frozen=True):
    """One replica a node should run.

    `gpus`: the GPU indexes its worker may use (CUDA_VISIBLE_DEVICES); () for none;
    None from a plane that does not assign GPUs (the worker's environment is left as is).
    """

    replica_id: str
    service_id: str
    version: str
    attempt: int
    gpus: tuple[int, ...] | None = None


class Welcome(msgspec.Struct, frozen=True, tag="welcome"):
    """The plane's answer to hello.

    `credential` is set only on the welcome that enrolls a node (its first join, with a
    join token): the node's own secret from then on, sent this once and kept hashed.
    """

    node_id: str
    cluster_id: str
    heartbeat_interval_s: float
    hub_url: str
    credential: str = ""
    features: Features = ()


class Assign(msgspec.Struct, frozen=True, tag="assign"):
    """The complete desired state of a node: replicas not listed must stop.

    `epoch` is the scheduler leader's fencing token (several planes on one state): a node
    refuses an assign older than the newest epoch it saw from any plane; 0 from a plane
    without a leader lease.
    """

    generation: int
    replicas: tuple[Assignment, ...] = ()
    epoch: int = 0


class Error(msgspec.Struct, frozen=True, tag="error"):
    """The plane refuses something the node said; `fatal` closes the connection.

    `code` says what a fatal error means for the node: REPLACED (a newer connection of
    this node took over), REVOKED (its credential was revoked), IDENTITY (its hello
    claimed an id it may not use); empty for anything else.
    """

    message: str
    fatal: bool = False
    code: str = ""


class LocalDeployment(msgspec.Struct, frozen=True):
    """A deployment a node runs from its own files (`flowctl run DIR`): owned by that node,
    never placed by the plane. Its one replica is `local:<service_id>` on the tunnel."""

    service_id: str
    version: str
    state: ReplicaState
    models: tuple[str, ...] = ()
    max_concurrency: int = 1
    detail: str = ""


class Local(msgspec.Struct, frozen=True, tag="local"):
    """The node's complete set of node-owned deployments; one no longer listed is withdrawn."""

    deployments: tuple[LocalDeployment, ...] = ()


class LocalVerdict(msgspec.Struct, frozen=True, tag="local_verdict"):
    """The plane's answer to `local`: the services it routes to, and why it refuses the others."""

    accepted: tuple[str, ...] = ()
    refused: dict[str, str] = msgspec.field(default_factory=dict)


# `lost` only answers a resend (see JobAttempt), which only a plane that announced job_resend sends.
JobAttemptState = Literal["running", "succeeded", "failed", "timed_out", "cancelled", "lost"]


class JobAttempt(msgspec.Struct, frozen=True, tag="job_attempt"):
    """Run one attempt of a job's `command` step in an installed bundle (docs/jobs.md).

    `epoch` is the job leader's fencing token: a node refuses an epoch older than one it saw.
    `shard`/`shard_total`: a broadcast step's shard (FLOWCTL_SHARD_INDEX/TOTAL); the artifact
    limits are the plane's (files over them fail the attempt before any upload).
    `resend`: a new job leader sends again an attempt the dead one sent here, whose end it never
    recorded (to a node that announced job_resend): running, it runs on; ended in this agent
    process, its end is reported again; started by an earlier agent process (stopped with it),
    it is reported `lost`; never received, it runs.
    """

    run_id: str
    tenant: str
    job: str
    step: str
    attempt: int
    epoch: int
    service_id: str
    version: str
    command: tuple[str, ...]
    env: dict[str, str] = msgspec.field(default_factory=dict)
    params: dict[str, str | int | float | bool] = msgspec.field(default_factory=dict)
    timeout_s: float | None = None
    shard: int | None = None
    shard_total: int | None = None
    max_artifact_bytes: int | None = None
    max_artifacts_total: int | None = None
    resend: bool = False


def _no_entries() -> msgspec.Raw:
    return msgspec.Raw(b"null")


class JobAttempts(msgspec.Struct, frozen=True, tag="job_attempts"):
    """Several `job_attempt`s for one node in one message, handled as if sent one by one, in order
    (each with its own epoch, fenced on its own). `attempts` stays raw JSON here: a malformed
    entry, or a batch over its bounds, is refused on its own by `job_batches.unpack_attempts`
    without failing the connection's other messages."""

    attempts: msgspec.Raw = msgspec.field(default_factory=_no_entries)


class JobCancel(msgspec.Struct, frozen=True, tag="job_cancel"):
    """Stop a job step attempt (its process group: SIGTERM, then SIGKILL)."""

    run_id: str
    step: str
    attempt: int
    epoch: int
    reason: str = ""
    shard: int | None = None


class JobReport(msgspec.Struct, frozen=True, tag="job_report"):
    """A node's word on a job step attempt: running (also on reconnect, to re-attach) or how it ended."""

    run_id: str
    step: str
    attempt: int
    epoch: int
    state: JobAttemptState
    exit_code: int | None = None
    reason: str = ""
    shard: int | None = None


class JobReports(msgspec.Struct, frozen=True, tag="job_reports"):
    """Several `job_report`s in one message, in order; raw as `JobAttempts.attempts` is."""

    reports: msgspec.Raw = msgspec.field(default_factory=_no_entries)


class JobLog(msgspec.Struct, frozen=True, tag="job_log"):
    """A piece of a job step attempt's output, in order."""

    run_id: str
    step: str
    attempt: int
    data: str
    shard: int | None = None


REPLACED = "replaced"
REVOKED = "revoked"
IDENTITY = "identity"


NodeMessage = Hello | Heartbeat | Status | Local | JobReport | JobReports | JobLog
PlaneMessage = Welcome | Assign | Error | LocalVerdict | JobAttempt | JobAttempts | JobCancel

_node_decoder = msgspec.json.Decoder(NodeMessage)
_plane_decoder = msgspec.json.Decoder(PlaneMessage)
_encoder = msgspec.json.Encoder()


class ProtocolError(ValueError):
    """A control message is oversized, not JSON, or not a known message."""


def encode(message: NodeMessage | PlaneMessage) -> str:
    """Serialize a message as a JSON text message."""
    return _encoder.encode(message).decode()


def _decode(decoder: msgspec.json.Decoder, text: str | bytes) -> object:
    if len(text) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"control message of {len(text)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        return decoder.decode(text)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"invalid control message: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"control message is not JSON: {exc}") from None


def decode_node_message(text: str | bytes) -> NodeMessage:
    """Parse a message sent by a node; raise ProtocolError naming the problem."""
    return _decode(_node_decoder, text)  # type: ignore[return-value]


def decode_plane_message(text: str | bytes) -> PlaneMessage:
    """Parse a message sent by the control plane; raise ProtocolError naming the problem."""
    return _decode(_plane_decoder, text)  # type: ignore[return-value]
