"""The runtime's errors: one tree under FlowError, each component's errors in a module of its own.

    FlowError                            runtime.errors
    ├── ListenError                      runtime.http.server
    ├── FileChanged                      runtime.http.files
    ├── InvalidJson                      runtime.http.jsonbody
    ├── ApiError                         runtime.api.responses
    ├── TunnelError                      runtime.tunnel.errors
    │   ├── TunnelProtocolError          runtime.tunnel.errors
    │   ├── TunnelClosed                 runtime.tunnel.errors
    │   └── StreamReset                  runtime.tunnel.errors
    ├── TokenError                       runtime.scheduler.store
    │   └── CredentialError              runtime.scheduler.store
    ├── EnrollError                      runtime.scheduler.store
    ├── PlacementError                   runtime.scheduler.placement
    ├── DeployError                      runtime.scheduler.deploy_errors
    │   ├── NotDeployed                  runtime.scheduler.deploy_errors
    │   ├── UnknownService               runtime.scheduler.deploy_errors
    │   └── DeployConflict               runtime.scheduler.deploy_errors
    ├── GatewayError                     runtime.gateway.errors
    ├── KeyStoreError                    runtime.gateway.keys
    ├── RedisUnavailable                 runtime.dispatch.resp
    ├── RedisReplyError                  runtime.dispatch.resp
    ├── SessionError                     runtime.sessions.manager
    ├── BackendError                     runtime.sessions.backend
    ├── PackageError                     runtime.node.packages.errors
    │   ├── InvalidReference             runtime.node.packages.errors
    │   ├── NotInstalled                 runtime.node.packages.errors
    │   ├── VersionInUse                 runtime.node.packages.errors
    │   ├── DowngradeRefused             runtime.node.packages.errors
    │   ├── NotEnoughSpace               runtime.node.packages.errors
    │   ├── DownloadFailed               runtime.node.packages.errors
    │   ├── TransferStalled              runtime.node.packages.errors
    │   ├── BlobMismatch                 runtime.node.packages.errors
    │   ├── TrustRefused                 runtime.node.packages.errors
    │   ├── VenvFailed                   runtime.node.packages.errors
    │   └── VerifyFailed                 runtime.node.packages.errors
    ├── SupervisionError                 runtime.node.workers.errors
    │   ├── BadPassthrough               runtime.node.workers.errors
    │   ├── PortInUse                    runtime.node.workers.errors
    │   └── WorkerError                  runtime.node.workers.errors
    │       ├── WorkerStartFailed        runtime.node.workers.errors
    │       ├── WorkerExited             runtime.node.workers.errors
    │       └── WorkerUnhealthy          runtime.node.workers.errors
    ├── AgentError                       runtime.node.agent.errors
    │   └── JoinRefused                  runtime.node.agent.errors
    │       └── BadGpuDeclaration        runtime.node.agent.sysinfo
    ├── HubError                         runtime.clients.errors
    │   ├── HubUnreachable               runtime.clients.errors
    │   ├── HubRequestFailed             runtime.clients.errors
    │   └── PullFailed                   runtime.clients.errors
    ├── PlaneError                       runtime.clients.errors
    └── JobError                         runtime.jobs.errors
        ├── JobDefinitionError           runtime.jobs.errors
        ├── ParameterError               runtime.jobs.errors
        ├── UnknownJob                   runtime.jobs.errors
        ├── IllegalTransition            runtime.jobs.errors
        ├── StaleEpoch                   runtime.jobs.errors
        ├── LeaseLost                    runtime.jobs.errors
        ├── WebhookRefused               runtime.jobs.webhooks
        ├── ArtifactError                runtime.jobs.artifacts
        │   └── ArtifactTooLarge         runtime.jobs.artifacts
        └── InputError                   runtime.jobs.inference

Errors that answer an HTTP request carry its `status`, and each API family answers them in
one body (docs/api-errors.md): GatewayError and SessionError in OpenAI's shape on /v1;
ApiError, DeployError, PlacementError, TokenError, KeyStoreError, and a GatewayError of the
gateway's admin API, in the admin APIs' `{"detail": message}`. The CLI prints any FlowError
as one line with exit code 1.

Outside the tree, on purpose: the wire parsers' ValueErrors (ProtocolError in
runtime.control.messages, MessageError in runtime.sessions.protocol, SSEError in
runtime.http.sse) and the signals WorkerUnreachable, WorkerConnectionError
(runtime.tunnel.worker_client) and IdentityRefused (runtime.scheduler.node_connection):
each is caught by its module's caller and never reaches a user as such. PasswordPolicyError
(runtime.api.passwords) is a ValueError its callers answer as a 400 naming the rule, and
Denied (runtime.console.context) is the console's signal to render an error page with its
status, always answered by the console's error handler; BatchInputError
(runtime.jobs.openai_files) is a ValueError the Files API answers as a 400 naming the line.
LostLeadership (runtime.scheduler.leadership) is the scheduler's signal to stop reconciling
and follow, caught by its leadership loop. DescriptionConflict (runtime.api.openapi) is a programming error: two parts of the plane
describing one route, found when the OpenAPI document is built, never by a request.
tests/runtime/test_errors.py keeps this drawing true.
"""

from __future__ import annotations


class FlowError(Exception):
    """Base of the errors the runtime raises for the user; the message is one line."""
