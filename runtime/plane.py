"""The control plane's composition root: hub, scheduler and gateway roles on one port, one process.

`serve_control_plane` builds every component once, wires them by constructor
injection and runs each as a task of one nursery (the hub's HTTP routes, the
scheduler's reconcile loop, the cluster routes that nodes connect to, the gateway's
OpenAI-compatible API). The gateway's paths and /health are answered by a bare ASGI
dispatcher in front of the quart app, so the hot path skips the framework. Routes of
the roles do not collide, so a single port serves them all; `roles` picks a
subset when the roles are split across processes.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio
from quart import Response
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from hub_store import make_private_dir, sql
from runtime.api import bearer_ok, ensure_admin_key, error_response, hash_key
from runtime.api.access import Access
from runtime.api.openapi import ApiDocs
from runtime.console import ConsoleParts
from runtime.console import register as register_console
from runtime.dispatch import Dispatcher
from runtime.dispatch.dispatcher import DEFAULT_FIRST_BYTE_TIMEOUT
from runtime.dispatch.limits import Principal
from runtime.dispatch.redis_limits import RedisLimiter
from runtime.gateway.app import FrontDoor, Gateway
from runtime.gateway.errors import GatewayError
from runtime.gateway.service import KeyService
from runtime.http import serve_app
from runtime.http.zerocopy import FileRouter
from runtime.hub import HubSettings, HubState, create_hub_app
from runtime.hub.app import MAX_SMALL_BODY
from runtime.hub.blobstore import open_hub_data
from runtime.hub.sendfile import blob_router
from runtime.hub.state import DEFAULT_UPLOAD_IDLE_TIMEOUT
from runtime.jobs.batch_api import BatchApi, BatchFront
from runtime.jobs.batches import DEFAULT_CONCURRENCY as DEFAULT_BATCH_CONCURRENCY
from runtime.jobs.lease import Lease
from runtime.jobs.plane_role import CombinedMetrics, JobsRole
from runtime.jobs.store import RunStore
from runtime.plane_openapi import plane_document
from runtime.scheduler import routes as cluster_routes
from runtime.scheduler.leadership import LeaderSettings, Leadership, SqlLease, open_leases
from runtime.scheduler.registry import DEFAULT_LOST_AFTER
from runtime.scheduler.resolver import hub_manifest_resolver
from runtime.scheduler.service import DEFAULT_HEARTBEAT_INTERVAL, Scheduler
from runtime.scheduler.tracking import watch_hub_writes
from runtime.sessions import routes as session_routes
from runtime.sessions.backend import ClusterBackend
from runtime.sessions.engine_url import EngineUrls
from runtime.sessions.manager import SessionError, SessionManager
from runtime.sessions.store import SessionStore, key_principal
from runtime.state import open_plane_state

log = logging.getLogger("flowctl.plane")
ALL_ROLES = ("hub", "scheduler", "gateway", "jobs")
DEFAULT_PORT = 8080
SERVICE_NAME = "flowctl control plane"


@dataclass(frozen=True)
class PlaneSettings:
    """How a control plane runs."""

    data_dir: Path
    roles: tuple[str, ...] = ALL_ROLES
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    hub: HubSettings | None = None
    hub_url: str | None = None
    lost_after: float = DEFAULT_LOST_AFTER
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    version: str = "0"
    state: str | None = None  # the state URL (None: SQLite files in data_dir); runtime/state.py
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlaneHandle:
    """What `serve_control_plane` hands to `task_status.started`."""

    urls: list[str]
    url: str
    scheduler: Scheduler | None
    gateway: Gateway | None = None
    dispatcher: Dispatcher | None = None
    app: Any = None  # the quart app (its url_map lists the routes quart serves)
    jobs: Any = None  # the jobs role (runtime.jobs.plane_role.JobsRole) when it runs here


async def serve_control_plane(
    settings: PlaneSettings,
    *,
    admin_key: str | None = None,
    metrics_token: str | None = None,
    on_new_key: Callable[[str], Any] | None = None,
    task_status: trio.TaskStatus[PlaneHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the chosen roles until cancelled; `started(PlaneHandle)` once listening.

    The admin key (FLOWCTL_ADMIN_KEY, else generated on first start and handed to
    `on_new_key` once) guards publishing, deployments and join tokens; /metrics takes
    it or `metrics_token` (FLOWCTL_METRICS_TOKEN), a key that reads nothing else.

    Cancellation: stops accepting, drains requests in flight, closes the state files.
    """
    unknown = [r for r in settings.roles if r not in ALL_ROLES]
    if unknown or not settings.roles:
        raise ValueError(f"unknown role {unknown[0] if unknown else ''!r} (roles: {', '.join(ALL_ROLES)})")
    if "gateway" in settings.roles and "scheduler" not in settings.roles:
        raise ValueError("the gateway role needs the scheduler role in the same process")
    await trio.to_thread.run_sync(make_private_dir, settings.data_dir)
    key_hash, new_key = await trio.to_thread.run_sync(ensure_admin_key, settings.data_dir, admin_key)
    if new_key is not None and on_new_key is not None:
        on_new_key(new_key)

    data = None
    scheduler: Scheduler | None = None
    limiter: RedisLimiter | None = None
    keys: KeyService | None = None
    gateway: Gateway | None = None
    sessions: SessionManager | None = None
    jobs: JobsRole | None = None
    file_router: FileRouter | None = None
    access: Access | None = None
    # The hub URL nodes download from: known before binding unless the port is 0 (tests).
    location = {"hub_url": settings.hub_url or f"http://{_host_for_url(settings.host)}:{settings.port}"}
    # Where every store keeps its rows; a bad or unreachable database is one line, before anything opens.
    plane_state = await trio.to_thread.run_sync(open_plane_state, settings.state, settings.data_dir)
    leases: sql.Database | None = None
    try:
        if (leader := settings.extra.get("leader")) is not None:  # several planes on one state: leases
            leases = await trio.to_thread.run_sync(open_leases, plane_state)
        if "hub" in settings.roles:
            hub_settings = settings.hub or HubSettings(data_dir=settings.data_dir)
            # On PostgreSQL the catalog lives in the shared state; blobs stay where --blobs says.
            data = await trio.to_thread.run_sync(open_hub_data, settings.data_dir, hub_settings.blobs,
                                                 plane_state if plane_state.kind == "postgresql" else None)
            await trio.to_thread.run_sync(data.catalog.purge_expired_leases)
            state = HubState(data, hub_settings, key_hash, limiter=trio.CapacityLimiter(hub_settings.threads))
            app = create_hub_app(state)
            if data.remote is None:  # blobs in S3 are redirects, answered by the app
                file_router = blob_router(state)  # large verified blobs go out with os.sendfile
        else:
            app = _app_without_hub()
        access = await trio.to_thread.run_sync(Access.open, settings.data_dir, plane_state)  # users, sign-in, audit
        access.register(app)
        if "scheduler" in settings.roles:
            scheduler = Scheduler.open(plane_state, hub_manifest_resolver(lambda: location["hub_url"]),
                                       hub_url=location["hub_url"], lost_after=settings.lost_after,
                                       heartbeat_interval=settings.heartbeat_interval)
            cluster_routes.register(app, scheduler, admin_key_hash=key_hash, version=settings.version,
                                    roles=settings.roles)
            if leases is not None:  # only the lease holder reconciles (runtime/scheduler/leadership.py)
                scheduler.leadership = Leadership.on(leases, LeaderSettings(**settings.extra["leader"]))
            if data is not None:
                watch_hub_writes(app, scheduler.tracker)  # tracked deployments see a publish at once
        if "gateway" in settings.roles and scheduler is not None:
            options = dict(settings.extra.get("gateway", {}))
            anonymous_tenant = options.pop("anonymous_tenant", None)
            keys = KeyService.open(plane_state, key_hash, anonymous_tenant=anonymous_tenant)
            if (warning := anonymous_exposure(settings.host, anonymous_tenant)) is not None:
                log.warning("%s", warning)
            metrics_keys = (key_hash, *([hash_key(metrics_token)] if metrics_token else []))
            # Limits shared by several planes live in Redis; without it, in this process.
            redis_url = options.pop("redis", None)
            limiter = RedisLimiter(redis_url, **options.pop("redis_options", {})) if redis_url else None
            dispatcher = Dispatcher(scheduler, limiter=limiter, on_usage=keys.record_usage,
                                    first_byte_timeout=options.pop("first_byte_timeout", DEFAULT_FIRST_BYTE_TIMEOUT))
            gateway = Gateway(dispatcher, keys.authenticate, metrics_key_hashes=metrics_keys, **options)
            scheduler.in_flight = dispatcher.router.node_in_flight  # status shows live counts, not a sample
            session_options = dict(settings.extra.get("sessions", {}))
            default_model = session_options.pop("default_model", None)
            tutors = session_options.pop("tutors", None)
            engine_urls = EngineUrls.from_settings(session_options.pop("public_ws_url", None),
                                                   session_options.pop("trusted_proxies", ()))
            if leases is not None:  # several planes: sessions in the shared state, resumable on any plane
                session_options.update(store=await trio.to_thread.run_sync(SessionStore.open, plane_state),
                                       principal_of=partial(key_principal, keys))
            sessions = SessionManager(**session_options)
            backend = ClusterBackend(dispatcher, audio_first_byte_timeout=gateway.audio_first_byte_timeout)
            session_routes.register(app, sessions, backend, scheduler,
                                    authenticate=partial(_session_caller, keys), admit=dispatcher.admit_session,
                                    default_model=default_model, is_admin=partial(_is_admin, key_hash),
                                    engine_urls=engine_urls, tutors=tutors)
            keys.on_revoked(sessions.close_revoked)  # a revoked key's sessions end with it
            keys.on_tenant_changed(sessions.retune)  # new tenant limits reach open sessions at once
        if "jobs" in settings.roles:
            batch_options = dict(settings.extra.get("batches", {}))
            jobs = JobsRole(settings.data_dir, state=plane_state, scheduler=scheduler, hub=data,  # steps on nodes when the scheduler runs
                            dispatcher=gateway.dispatcher if gateway is not None else None, keys=keys,
                            batch_concurrency=batch_options.pop("concurrency", DEFAULT_BATCH_CONCURRENCY),
                            lease_of=_job_lease(leases, leader))
            jobs.register(app, admin_key_hash=key_hash, watch_hub=data is not None,
                          tenant_of=partial(_key_tenant, keys) if keys is not None else None)
            if gateway is not None:
                gateway.metrics = CombinedMetrics(gateway.metrics, jobs.engine)  # type: ignore[assignment]
        register_console(app, ConsoleParts(access, scheduler=scheduler, hub=data, keys=keys, sessions=sessions,
                                           jobs=jobs))  # the web console at /ui
        # quart types asgi_app as a method over hypercorn's TypedDict scopes; FrontDoor takes dicts.
        app.asgi_app = FrontDoor(  # type: ignore[method-assign, assignment]
            gateway, app.asgi_app, partial(_health, settings.roles, scheduler, gateway, sessions), extra=keys)
        if keys is not None:  # the OpenAI Files and Batches API (503 without the jobs role)
            batch_api = (jobs.batch_api(keys.authenticate, **batch_options) if jobs is not None
                         else BatchApi(keys.authenticate, None, None))
            app.asgi_app = BatchFront(batch_api, app.asgi_app)  # type: ignore[method-assign, assignment]
        # One description of every route of the roles here, at /openapi.json, and its explorer at /docs.
        app.asgi_app = ApiDocs(plane_document(settings.roles, settings.version),  # type: ignore[method-assign, assignment]
                               app.asgi_app, title=f"flowctl control plane ({', '.join(settings.roles)})")
        # Outermost: every admin route's principal, role check, CSRF and audit row (runtime/api/guard.py).
        proxies = EngineUrls.from_settings(None, settings.extra.get("sessions", {}).get("trusted_proxies") or ())
        app.asgi_app = access.guard(app.asgi_app, key_hash, trusts=proxies.trusts)  # type: ignore[method-assign, assignment]
        async with trio.open_nursery() as nursery:
            if limiter is not None:
                await nursery.start(limiter.run)  # renews slots, writes releases and charges
            bound = await nursery.start(partial(serve_app, app, host=settings.host, port=settings.port,
                                                 file_router=file_router))
            url = _first_url(bound)
            if settings.hub_url is None and settings.port == 0:
                location["hub_url"] = url
            if scheduler is not None:
                scheduler.hub_url = location["hub_url"]
                await nursery.start(scheduler.run)
            if keys is not None:
                await nursery.start(keys.run)
            if sessions is not None:
                await nursery.start(sessions.run_reaper)
            if jobs is not None:
                await nursery.start(jobs.run)
                if scheduler is not None:
                    nursery.start_soon(jobs.watch_deployments, scheduler.status)
            log.info("control plane (%s) on %s", ",".join(settings.roles), url)
            task_status.started(PlaneHandle(urls=list(bound), url=url, scheduler=scheduler, gateway=gateway,
                                            dispatcher=gateway.dispatcher if gateway is not None else None,
                                            app=app, jobs=jobs))
    finally:
        if jobs is not None:
            jobs.close()
        if keys is not None:
            keys.store.close()
        if scheduler is not None:
            scheduler.store.close()
        if data is not None:
            data.close()
        if access is not None:
            access.close()
        if leases is not None:
            leases.close()
        if sessions is not None and sessions.store is not None:
            sessions.store.close()
        plane_state.close()


async def _session_caller(keys: KeyService, authorization: str | None) -> Principal:
    """Sessions belong to the caller's API key and its tenant."""
    try:
        return await keys.authenticate(authorization)
    except GatewayError as exc:
        raise SessionError(exc.status, exc.message) from None


async def _key_tenant(keys: KeyService, authorization: str) -> str | None:
    """The tenant of a valid API key (never the anonymous tenant's: jobs need a key), else None."""
    try:
        return (await keys.authenticate(authorization)).tenant
    except GatewayError:
        return None


def anonymous_exposure(host: str, anonymous_tenant: str | None) -> str | None:
    """The start-up warning when requests without a key are served and the plane listens beyond loopback."""
    if anonymous_tenant is None or _is_loopback(host):
        return None
    return (f"requests without an API key are served as tenant {anonymous_tenant!r} and the control plane "
            f"listens on {host or '*'} (beyond loopback): anyone who reaches it can use the models")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # "" (every address) or a name that may resolve anywhere


def _is_admin(key_hash: str, authorization: str | None) -> bool:
    """Whether a request carries the plane's admin key."""
    return bearer_ok(authorization, key_hash)


def _health(roles: tuple[str, ...], scheduler: Scheduler | None, gateway: Gateway | None,
            sessions: SessionManager | None = None) -> dict[str, Any]:
    """One /health for every role this process runs."""
    parts: dict[str, Any] = {}
    if "hub" in roles:
        parts["hub"] = {"status": "ok"}
    if scheduler is not None:
        parts["scheduler"] = {"status": "ok", "nodes": len(scheduler.registry.nodes()),
                              "models": len(scheduler.models())}
        if (leader := scheduler.leadership) is not None:
            parts["scheduler"].update(plane=leader.settings.name, leader=leader.valid(), epoch=leader.epoch)
    if gateway is not None:
        parts["gateway"] = gateway.health()
    # Seed 002's fields at the top level, where its clients read them ("healthy" is its word).
    health: dict[str, Any] = {"status": "healthy", "service": SERVICE_NAME, "roles": parts}
    if sessions is not None:
        health.update(active_sessions=sessions.active, max_sessions=sessions.max_sessions)
    return health


def _job_lease(leases: sql.Database | None, leader: dict[str, Any] | None) -> Callable[[RunStore], Lease] | None:
    """The jobs engine's lease (row `jobs` beside the scheduler's) when several planes share the state, else None."""
    if leases is None or leader is None:
        return None
    chosen = LeaderSettings(**leader)
    return lambda _store: SqlLease(leases, chosen.name, name="jobs", ttl_s=chosen.ttl_s,
                                   poll_s=min(1.0, chosen.ttl_s / 4))


def _app_without_hub() -> QuartTrio:
    """The quart app when no hub runs here: the hub app's body limits and JSON errors all the same."""
    app = QuartTrio("flowctl.plane")
    app.config["MAX_CONTENT_LENGTH"] = MAX_SMALL_BODY  # quart's default is 16 MiB
    app.config["BODY_TIMEOUT"] = DEFAULT_UPLOAD_IDLE_TIMEOUT

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        return error_response(exc.code or 500, exc.description or exc.name)

    return app


def _host_for_url(host: str) -> str:
    # A server bound to every address is reached on loopback from this machine.
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _first_url(bound: Any) -> str:
    first = bound[0] if isinstance(bound, list | tuple) else bound
    return str(first).replace("0.0.0.0", "127.0.0.1")
