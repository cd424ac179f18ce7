"""The plane's `jobs` role: the engine on DATA_DIR/jobs.db, its HTTP API, hub events and metrics.

With the scheduler role here, command steps run on the cluster's nodes (`NodeExecutor`: node
messages routed here by `route_job_messages`, logs under DATA_DIR/jobs/attempts) and tenant keys
may define their own tenant's jobs. Without it (a jobs-only plane) they run on the plane's own
machine through `LocalCommandExecutor` (working directory DATA_DIR/jobs/work), so there only the
admin key may define jobs; tenant keys list, trigger, cancel and read their own tenant's.
With the scheduler here, `deployment_ready` and `deployment_failed` events follow its status
(checked every `DEPLOYMENT_POLL_S`): ready when every desired replica of the deployment's version
serves, failed when one of its replicas failed; each fires once per change, never for the state
a deployment already had when the plane started.
Inference steps run here in the plane (`InferenceExecutor`), through the gateway's dispatcher as
the run's tenant, when the gateway role runs beside this one; `ByKindExecutor` sends each attempt
to the executor of its step's kind. The OpenAI Files and Batches API (`batch_api`) is built on
them: each batch a run of a one-step inference job (runtime/jobs/batches.py).
Webhook secrets come from the environment: `secret_name = "github"` reads
FLOWCTL_WEBHOOK_SECRET_GITHUB (upper case, '-' and '.' as '_').
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from hub_store import sql
from runtime.dispatch.limits import Principal
from runtime.exception_groups import describe
from runtime.heap import tune_collector
from runtime.jobs import artifact_routes, routes
from runtime.jobs.artifacts import ArtifactStore, keep_swept, limits_from_env
from runtime.jobs.batch_api import Authenticate, BatchApi
from runtime.jobs.batch_store import BatchStore
from runtime.jobs.batches import DEFAULT_CONCURRENCY, BatchService
from runtime.jobs.checkpoints import Checkpoints
from runtime.jobs.engine import Event, JobEngine
from runtime.jobs.errors import LeaseLost
from runtime.jobs.executors import ByKindExecutor
from runtime.jobs.inference import InferenceExecutor
from runtime.jobs.lease import Lease, SoloLease
from runtime.jobs.local_command import LocalCommandExecutor
from runtime.jobs.node_executor import NodeExecutor
from runtime.jobs.openai_files import FileStore
from runtime.jobs.store import RunStore

if TYPE_CHECKING:
    from hub_store.datadir import HubData
    from runtime.dispatch.dispatcher import Dispatcher
    from runtime.gateway.service import KeyService
    from runtime.scheduler.service import Scheduler

log = logging.getLogger("flowctl.jobs")
DB_FILE = "jobs.db"
SECRET_ENV_PREFIX = "FLOWCTL_WEBHOOK_SECRET_"
DEPLOYMENT_POLL_S = 1.0
RELEAD_PAUSE_S = 1.0  # after leading failed, so a store that stays away is not hammered
_PUBLISH = re.compile(r"^/api/services/([^/]+)/([^/]+)$")


def secret_env_name(secret_name: str) -> str:
    """The environment variable holding webhook secret `secret_name`."""
    return SECRET_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", secret_name).upper()


class JobsRole:
    """The jobs role's parts, built before the plane binds and run in its nursery."""

    def __init__(self, data_dir: Path, *, environ: Mapping[str, str] | None = None,
                 scheduler: Scheduler | None = None, hub: HubData | None = None,
                 dispatcher: Dispatcher | None = None, keys: KeyService | None = None,
                 batch_concurrency: int = DEFAULT_CONCURRENCY,
                 lease_of: Callable[[RunStore], Lease] | None = None, state: sql.State | None = None):
        # `state` on PostgreSQL: every table below in the shared state database (files and logs stay here).
        self.store = RunStore(sql.located(data_dir / DB_FILE, state))
        # Step artifacts: in the hub's blob store when the hub role runs here (`hub`), else DATA_DIR/jobs/blobs.
        self.artifacts = ArtifactStore.for_plane(data_dir, hub=hub, limits=limits_from_env(
            os.environ if environ is None else environ), state=state)
        self.scheduler = scheduler
        self.executor: NodeExecutor | LocalCommandExecutor
        if scheduler is not None:
            self.executor = NodeExecutor(scheduler, self.store, data_dir / "jobs" / "attempts",
                                         artifacts=self.artifacts)
        else:
            self.executor = LocalCommandExecutor(data_dir / "jobs" / "attempts", workdir=data_dir / "jobs" / "work",
                                                 artifacts=self.artifacts)
        self.keys = keys
        self.checkpoints = Checkpoints(sql.located(data_dir / "jobs" / "inference.db", state))
        self.files = FileStore(data_dir / "openai", state)
        self.inference = InferenceExecutor(dispatcher, self.principal_of, self.checkpoints, self.artifacts,
                                           self.files)
        by_kind = ByKindExecutor({"command": self.executor, "inference": self.inference})
        # `lease_of(store)`: a lease the planes on one state share (the engine fires only while holding it).
        self.engine = JobEngine(self.store, by_kind, SoloLease() if lease_of is None else lease_of(self.store))
        self._shared_lease = lease_of is not None
        self.batches = BatchService(self.engine, self.store, self.files, self.checkpoints,
                                    BatchStore(data_dir / "openai", state), concurrency=batch_concurrency)
        self._environ = os.environ if environ is None else environ
        self._nursery: trio.Nursery | None = None

    def close(self) -> None:
        """Close the role's databases."""
        self.artifacts.close()
        self.store.close()
        self.checkpoints.close()
        self.files.close()
        self.batches.store.close()

    async def principal_of(self, tenant: str) -> Principal:
        """Who an inference step's calls come from: its run's tenant, with the tenant's limits."""
        if self.keys is None:
            return Principal(tenant, "jobs")
        from runtime.gateway.keys import KeyStoreError, tenant_limits

        try:
            record = await self.keys.run_store(self.keys.store.tenant, tenant)
        except KeyStoreError:  # a tenant with no keys (the admin's "default"): no limits to apply
            return Principal(tenant, "jobs")
        return Principal(tenant, "jobs", tenant_limits=tenant_limits(record))

    def batch_api(self, authenticate: Authenticate, **options: Any) -> BatchApi:
        """The OpenAI Files/Batches ASGI app over this role's files and batches."""
        return BatchApi(authenticate, self.files, self.batches, **options)

    def progress(self, run_id: str, step: str) -> dict[str, Any] | None:
        """An inference step's progress (done, failed, total lines), or None (call it from a thread)."""
        found = self.checkpoints.progress(run_id, step)
        return None if found is None else {"done": found.done, "failed": found.failed, "total": found.total}

    def parts(self, run_id: str) -> dict[str, list[dict[str, Any]]]:
        """The run's artifacts and broadcast shards, for its detail (call it from a thread)."""
        shards = self.executor.shards.of(run_id) if isinstance(self.executor, NodeExecutor) else []
        return {"artifacts": [a.to_json() for a in self.artifacts.list(run_id)],
                "shards": [{"step": r.step, **r.to_json()} for r in shards]}

    def secret(self, name: str) -> bytes | None:
        """A webhook secret from the environment, or None when unset."""
        value = self._environ.get(secret_env_name(name))
        return value.encode() if value else None

    def register(self, app: Any, *, admin_key_hash: str, tenant_of: routes.TenantOf | None,
                 watch_hub: bool) -> None:
        """The HTTP API on `app`, and a `service_published` event after each publish to the hub here."""
        routes.register(app, self.engine, self.store, admin_key_hash=admin_key_hash, tenant_of=tenant_of,
                        secret_of=self.secret, log_path=self.executor.log_path,
                        tenants_define=self.scheduler is not None, progress_of=self.progress, parts_of=self.parts)
        nodes = self.executor if isinstance(self.executor, NodeExecutor) else None
        artifact_routes.register(app, self.store, self.artifacts, admin_key_hash=admin_key_hash, tenant_of=tenant_of,
                                 shards=nodes.shards if nodes is not None else None, nodes=nodes)
        if watch_hub:
            from quart import request

            @app.after_request
            async def publish_event(response: Any) -> Any:
                match = _PUBLISH.match(request.path)
                if request.method == "PUT" and match and 200 <= response.status_code < 300:
                    self.notify(Event("service_published", service=match.group(1)))
                return response

    def notify(self, event: Event) -> None:
        """Fire the jobs waiting for `event`, in the background (never fails the caller)."""
        if self._nursery is not None:
            self._nursery.start_soon(self._notify, event)

    async def _notify(self, event: Event) -> None:
        try:
            await self.engine.notify(event)
        except Exception:  # an event is best effort: one bad job must not stop the plane
            log.exception("jobs: could not fire jobs on %s", event)

    async def watch_deployments(self, status: Callable[[], dict[str, Any]], *,
                                interval: float = DEPLOYMENT_POLL_S) -> None:
        """Send deployment_ready / deployment_failed when a deployment's condition changes."""
        seen: dict[str, tuple[str, str]] | None = None
        while True:
            now = {d["service"]: (str(d.get("version")), _condition(d)) for d in status().get("deployments", [])}
            for service, (version, condition) in now.items():
                if seen is not None and seen.get(service) != (version, condition) and condition != "other":
                    self.notify(Event("deployment_ready" if condition == "ready" else "deployment_failed",
                                      service=service))
            seen = now
            await trio.sleep(interval)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The engine until cancelled; started once it leads (the plane closes the store after)."""
        executor = self.executor
        tune_collector()  # bursts of runs: their objects die young, not in full collections (runtime.heap)
        executor.data_dir.mkdir(parents=True, exist_ok=True)
        if isinstance(executor, LocalCommandExecutor):
            (executor.workdir or executor.data_dir).mkdir(parents=True, exist_ok=True)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if isinstance(executor, NodeExecutor):
                    from runtime.scheduler.node_connection import route_job_messages

                    await nursery.start(executor.run)
                    route_job_messages(executor.scheduler, executor.on_message)
                    nursery.start_soon(_unroute, executor)
                if self._shared_lease:
                    nursery.start_soon(self._lead_while_leased)  # a follower plane must start all the same
                else:
                    await nursery.start(self.engine.run)
                nursery.start_soon(keep_swept, self.artifacts)  # artifacts of runs the history limits removed
                await nursery.start(self.batches.run)
                task_status.started()
        finally:
            self._nursery = None


    async def _lead_while_leased(self) -> None:
        """Lead the engine whenever this plane holds the shared job lease, until cancelled."""
        while True:
            try:
                await self.engine.run()
            except LeaseLost as exc:
                log.warning("jobs: %s; waiting for the lease again", exc)
            except Exception as exc:  # e.g. the state database went away mid-write: lead again once it answers
                log.error("jobs: leading failed, stepping down: %s", describe(exc))
                await trio.sleep(RELEAD_PAUSE_S)


async def _unroute(executor: NodeExecutor) -> None:
    """Stop routing node messages to `executor` when the role stops."""
    from runtime.scheduler.node_connection import route_job_messages

    try:
        await trio.sleep_forever()
    finally:
        route_job_messages(executor.scheduler, None)


def _condition(deployment: dict[str, Any]) -> str:
    """"failed" when a replica failed, "ready" when every desired replica serves, else "other"."""
    if any(r.get("state") == "failed" for r in deployment.get("replicas", [])):
        return "failed"
    desired = deployment.get("desired") or 0
    return "ready" if desired and deployment.get("ready", 0) >= desired else "other"


class CombinedMetrics:
    """/metrics of the gateway followed by the jobs engine's."""

    def __init__(self, first: Any, jobs: JobEngine):
        object.__setattr__(self, "first", first)
        object.__setattr__(self, "jobs", jobs)

    def render(self) -> str:
        """Both in Prometheus text."""
        head = self.first.render()
        return head + ("" if head.endswith("\n") or not head else "\n") + self.jobs.metrics.render()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.first, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.first, name, value)  # the gateway's counters live on its own metrics
