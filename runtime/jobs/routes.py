"""The jobs HTTP API under /api/v1/ (seed 004's versioned API), attached to the plane's quart app.

    GET    /api/v1/jobs                          jobs (admin: every tenant, or ?tenant=)
    POST   /api/v1/jobs                          create one job from a JSON definition (409 if it exists)
    POST   /api/v1/jobs/apply                    apply TOML/YAML files whole, or ?dry_run=true for the diff
    GET    /api/v1/jobs/{name}                   one job with its definition
    PUT    /api/v1/jobs/{name}                   create or update from a JSON definition
    DELETE /api/v1/jobs/{name}                   remove a job (runs that started finish)
    POST   /api/v1/jobs/{name}/suspend|resume    stop or restart firing
    POST   /api/v1/jobs/{name}/trigger           a run now, with {"parameters": {...}}
    GET    /api/v1/runs                          runs, newest first (?job= ?state= ?limit=)
    GET    /api/v1/runs/{run_id}                 a run with its steps and attempts
    POST   /api/v1/runs/{run_id}/cancel          cancel a pending or running run
    GET    /api/v1/runs/{run_id}/logs            attempt logs (?step= ?attempt=), ?follow=true as SSE
    POST   /api/v1/hooks/{tenant}/{name}         a webhook-triggered job's signed call (no key: the signature)

The admin key sees every tenant (`?tenant=`, default "default"); a tenant's API key sees only
its tenant: another tenant's jobs and runs are 404. Errors are `{"detail": ...}`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from functools import partial, wraps
from pathlib import Path
from typing import Any

import trio
from quart import Response, request

from runtime.api import ApiError, bearer_ok, error_response, json_response
from runtime.api.guard import principal_of
from runtime.http.jsonbody import InvalidJson, decode_json
from runtime.jobs.apply import MAX_FILES, SUFFIXES, plan_changes, raise_apply_cap
from runtime.jobs.engine import JobEngine
from runtime.jobs.errors import (
    IllegalTransition,
    JobDefinitionError,
    JobError,
    ParameterError,
    UnknownJob,
)
from runtime.jobs.firetimes import next_fire
from runtime.jobs.logstream import LogPath, follow, read_log
from runtime.jobs.model import JobSpec, WebhookTrigger
from runtime.jobs.records import JobRecord, RunRecord
from runtime.jobs.schema import DEFAULT_TENANT, parse_job, parse_job_text
from runtime.jobs.store import RunStore
from runtime.jobs.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookRefused,
    WebhookVerifier,
)

PREFIX = "/api/v1"
CANCEL_WAIT_S = 10.0
MAX_RUNS = 1000
# A tenant key's API check: the tenant of `Authorization`, or None when it is no valid key.
TenantOf = Callable[[str], Awaitable[str | None]]
SecretOf = Callable[[str], bytes | None]


def _status(exc: JobError) -> int:
    if isinstance(exc, WebhookRefused):
        return 401
    if isinstance(exc, UnknownJob):
        return 404
    if isinstance(exc, JobDefinitionError | ParameterError):
        return 400
    return 409  # IllegalTransition and the rest: the state does not allow it


def _answer_errors(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @wraps(handler)
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return await handler(*args, **kwargs)
        except ApiError as exc:
            return error_response(exc.status, exc.detail, exc.headers)
        except JobError as exc:
            return error_response(_status(exc), str(exc))
    return wrapped


def register(app: Any, engine: JobEngine, store: RunStore, *, admin_key_hash: str,
             tenant_of: TenantOf | None = None, secret_of: SecretOf = lambda name: None,
             log_path: LogPath | None = None, tenants_define: bool = False,
             progress_of: Callable[[str, str], dict[str, Any] | None] | None = None,
             parts_of: Callable[[str], dict[str, list[dict[str, Any]]]] | None = None) -> None:
    """Attach the jobs API to a quart-trio app; `tenant_of` admits tenant keys (None: admin only).

    `progress_of(run_id, step)`: an inference step's `{done, failed, total}`, shown on its step.
    `parts_of(run_id)`: the run's `artifacts` and broadcast `shards` (rows with a `step`), each
    shown on its step in the run detail.

    `tenants_define`: whether a tenant key may create and update jobs; False where command
    steps run on the plane's own machine (no scheduler role: only the admin may put a command there).
    """
    verifiers: dict[tuple[str, str, bytes, int], WebhookVerifier] = {}
    raise_apply_cap(app)

    async def db(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await trio.to_thread.run_sync(partial(fn, *args, **kwargs))

    async def caller() -> str | None:
        """None for the admin key (every tenant), else the key's tenant."""
        auth = request.headers.get("Authorization")
        if (who := principal_of(request)) is not None:  # a user: its role was checked by the plane's guard
            return who.tenant  # None for admin, operator, viewer: every tenant
        if bearer_ok(auth, admin_key_hash):
            return None
        if auth and tenant_of is not None and (tenant := await tenant_of(auth)) is not None:
            return tenant
        what = "the admin key or a tenant's API key" if tenant_of is not None else "the admin key"
        raise ApiError(401, f"this needs {what} (Authorization: Bearer ...)", {"WWW-Authenticate": "Bearer"})

    async def scope() -> str:
        """The tenant a request acts in: the key's, or the admin's ?tenant= (default "default")."""
        tenant = await caller()
        return tenant if tenant is not None else request.args.get("tenant", DEFAULT_TENANT)

    async def definer() -> str | None:
        tenant = await caller()
        if tenant is not None and not tenants_define:
            raise ApiError(403, "defining jobs needs the admin key here: without the scheduler role their "
                                "commands run on the control plane's own machine")
        return tenant

    async def body() -> Any:
        try:
            return decode_json(await request.get_data(cache=False, as_text=False, parse_form_data=False))
        except InvalidJson as exc:
            raise ApiError(400, str(exc)) from None

    async def visible_run(run_id: str) -> RunRecord:
        tenant = await caller()
        run: RunRecord = await db(store.run, run_id)
        if tenant is not None and run.tenant != tenant:
            raise UnknownJob(f"no run {run_id!r}")
        return run

    def definition(doc: Any, tenant: str, name: str | None = None) -> JobSpec:
        if not isinstance(doc, dict):
            raise ApiError(400, "the request body must be a job definition (a JSON object)")
        if name is not None and doc.get("name", name) != name:
            raise ApiError(400, f"name: {doc.get('name')!r} does not match the path's {name!r}")
        return parse_job({**doc, "name": doc.get("name", name)}, source="request body", tenant=tenant)

    @app.get(f"{PREFIX}/jobs")
    @_answer_errors
    async def list_jobs() -> Response:
        tenant = await caller()
        wanted = tenant if tenant is not None else request.args.get("tenant")
        # Each job's next fire is a cron step: 10,000 of them are seconds, off the loop.
        listed = await db(lambda: [_job_json(j) for j in store.jobs(wanted)])
        return json_response({"jobs": listed})

    @app.post(f"{PREFIX}/jobs")
    @_answer_errors
    async def create_job() -> Response:
        tenant = await definer() or request.args.get("tenant", DEFAULT_TENANT)
        spec = definition(await body(), tenant)
        try:
            await db(store.job, spec.tenant, spec.name)
        except UnknownJob:
            record, change = await engine.apply(spec)
            return json_response({"change": change, "job": _job_json(record)}, 201)
        raise ApiError(409, f"job {spec.name!r} already exists in tenant {spec.tenant!r} (PUT replaces it)")

    @app.post(f"{PREFIX}/jobs/apply")
    @_answer_errors
    async def apply_jobs() -> Response:
        tenant = await definer() or request.args.get("tenant")  # the admin's None: each file's own, or default
        data = await body()
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(files, list) or not files:
            raise ApiError(400, 'files: expected a list of {"name": "job.toml", "text": "..."}')
        if len(files) > MAX_FILES:
            raise ApiError(400, f"files: {len(files)} files; at most {MAX_FILES} at once")
        dry_run = _flag(data.get("dry_run")) or _flag(request.args.get("dry_run"))
        specs = await trio.to_thread.run_sync(_parse_files, files, tenant)  # 10,000 files: seconds of parsing
        changes = await db(plan_changes, store, specs)
        if not dry_run:
            await engine.apply_many(specs)
        return json_response({"dry_run": dry_run, "changes": [asdict(c) for c in changes]})

    @app.get(f"{PREFIX}/jobs/<name>")
    @_answer_errors
    async def get_job(name: str) -> Response:
        return json_response(_job_json(await db(store.job, await scope(), name), detail=True))

    @app.put(f"{PREFIX}/jobs/<name>")
    @_answer_errors
    async def put_job(name: str) -> Response:
        spec = definition(await body(), await definer() or request.args.get("tenant", DEFAULT_TENANT), name)
        record, change = await engine.apply(spec)
        return json_response({"change": change, "job": _job_json(record)}, 201 if change == "created" else 200)

    @app.delete(f"{PREFIX}/jobs/<name>")
    @_answer_errors
    async def delete_job(name: str) -> Response:
        await engine.delete(await scope(), name)
        return json_response({"deleted": name})

    async def suspend(name: str, flag: bool) -> Response:
        tenant = await scope()
        await engine.set_suspended(tenant, name, flag)
        return json_response(_job_json(await db(store.job, tenant, name)))

    @app.post(f"{PREFIX}/jobs/<name>/suspend")
    @_answer_errors
    async def suspend_job(name: str) -> Response:
        return await suspend(name, True)

    @app.post(f"{PREFIX}/jobs/<name>/resume")
    @_answer_errors
    async def resume_job(name: str) -> Response:
        return await suspend(name, False)

    @app.post(f"{PREFIX}/jobs/<name>/trigger")
    @_answer_errors
    async def trigger_job(name: str) -> Response:
        tenant = await scope()
        data = await body() if request.content_length else {}
        params = data.get("parameters", {}) if isinstance(data, dict) else None
        if not isinstance(params, dict):
            raise ApiError(400, 'parameters: expected an object ({"parameters": {"name": value}})')
        run_id = await engine.trigger(tenant, name, params)
        return json_response({"run_id": run_id, "run": _run_json(await db(store.run, run_id))}, 202)

    @app.get(f"{PREFIX}/runs")
    @_answer_errors
    async def list_runs() -> Response:
        tenant = await caller()
        args = request.args
        tenant = tenant if tenant is not None else args.get("tenant")
        states = [s for s in args.get("state", "").split(",") if s] or None
        limit = _int_arg(args.get("limit"), "limit", 100, MAX_RUNS)
        job = args.get("job")
        if job is not None and tenant is None:
            tenant = DEFAULT_TENANT
        runs = await db(store.runs, tenant=tenant, job_name=job, states=states, limit=limit, newest_first=True)
        return json_response({"runs": [_run_json(r) for r in runs]})

    @app.get(f"{PREFIX}/runs/<run_id>")
    @_answer_errors
    async def get_run(run_id: str) -> Response:
        run = await visible_run(run_id)
        steps = await db(store.steps, run_id)
        attempts = await db(store.attempts, run_id)
        out = _run_json(run)
        out["steps"] = [{**asdict(s), "attempts": [_attempt_json(a) for a in attempts if a.step == s.step]}
                        for s in steps]
        if progress_of is not None:
            kinds = {step.name: step.kind for step in (await db(store.run_spec, run_id)).steps}
            for step_json in out["steps"]:
                if kinds.get(step_json["step"]) == "inference":
                    step_json["progress"] = await db(progress_of, run_id, step_json["step"])
        if parts_of is not None:
            parts = await db(parts_of, run_id)
            for step_json in out["steps"]:
                for kind in ("artifacts", "shards"):
                    step_json[kind] = [p for p in parts[kind] if p["step"] == step_json["step"]]
        return json_response(out)

    @app.post(f"{PREFIX}/runs/<run_id>/cancel")
    @_answer_errors
    async def cancel_run(run_id: str) -> Response:
        await visible_run(run_id)
        with trio.move_on_after(CANCEL_WAIT_S):
            return json_response(_run_json(await engine.cancel(run_id)))
        return json_response(_run_json(await db(store.run, run_id)), 202)  # still stopping

    @app.get(f"{PREFIX}/runs/<run_id>/logs")
    @_answer_errors
    async def run_logs(run_id: str) -> Response:
        await visible_run(run_id)
        if log_path is None:
            raise ApiError(404, "this plane keeps no step logs")
        step = request.args.get("step")
        attempt = _int_arg(request.args.get("attempt"), "attempt", 0, 1 << 30) or None
        steps = [s.name for s in (await db(store.run_spec, run_id)).steps]  # a pending run has no step rows yet
        if step is not None and step not in steps:
            raise ApiError(404, f"run {run_id!r} has no step {step!r} (steps: {', '.join(steps)})")
        chosen = [step] if step is not None else steps
        if _flag(request.args.get("follow")):
            stream = follow(store, log_path, run_id, chosen, attempt)
            return Response(stream, 200, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})
        parts = []
        for name in chosen:
            for a in await db(store.attempts, run_id, name):
                if attempt is None or a.attempt == attempt:
                    text = await trio.to_thread.run_sync(read_log, log_path(run_id, name, a.attempt))
                    parts.append(f"== {name} attempt {a.attempt} ({a.state}) ==\n{text}")
        return Response("".join(parts), 200, {"Content-Type": "text/plain; charset=utf-8"})

    @app.post(f"{PREFIX}/hooks/<tenant>/<name>")
    @_answer_errors
    async def webhook(tenant: str, name: str) -> Response:
        raw = await request.get_data(cache=False, as_text=False, parse_form_data=False)
        job: JobRecord = await db(store.job, tenant, name)
        trigger = job.spec.trigger
        if not isinstance(trigger, WebhookTrigger):
            raise UnknownJob(f"job {name!r} of tenant {tenant!r} has no webhook trigger")
        secret = secret_of(trigger.secret_name)
        if secret is None:
            raise ApiError(503, f"the plane has no webhook secret {trigger.secret_name!r} configured")
        key = (tenant, name, secret, trigger.replay_window)
        verifier = verifiers.setdefault(key, WebhookVerifier(secret, window_s=trigger.replay_window))
        verifier.verify(request.headers.get(TIMESTAMP_HEADER), request.headers.get(SIGNATURE_HEADER), raw,
                        now=time.time())
        if job.suspended:
            raise IllegalTransition(f"job {name!r}", "suspended", "fired")
        params = _webhook_params(raw)
        run_id = await engine.trigger(tenant, name, params, cause="webhook")
        return json_response({"run_id": run_id}, 202)


def _parse_files(files: list[Any], tenant: str | None) -> list[JobSpec]:
    """Every file validated before any is applied; problems of all files in one error."""
    specs: list[JobSpec] = []
    problems: list[str] = []
    seen: dict[tuple[str, str], str] = {}
    for i, item in enumerate(files):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not isinstance(item.get("text"), str):
            problems.append(f'files[{i}]: expected {{"name": "job.toml", "text": "..."}}')
            continue
        source = item["name"]
        suffix = Path(source).suffix.lower()
        if suffix not in SUFFIXES:
            problems.append(f"{source}: not a {', '.join(SUFFIXES)} file")
            continue
        try:
            spec = parse_job_text(item["text"], fmt=suffix.lstrip("."), source=source, tenant=tenant)
        except JobDefinitionError as exc:
            problems.append(str(exc))
            continue
        if (spec.tenant, spec.name) in seen:
            problems.append(f"{source}: name: job {spec.name!r} is also defined in {seen[spec.tenant, spec.name]}")
            continue
        seen[spec.tenant, spec.name] = source
        specs.append(spec)
    if problems:
        raise JobDefinitionError(problems)
    return specs


def _webhook_params(raw: bytes) -> dict[str, Any]:
    """A JSON body's "parameters" object overrides the defaults; any other body is only signed."""
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        return {}
    params = data.get("parameters") if isinstance(data, dict) else None
    return params if isinstance(params, dict) else {}


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("1", "true", "yes"))


def _int_arg(value: str | None, name: str, default: int, most: int) -> int:
    if value is None:
        return default
    if not value.isdigit() or not 0 < int(value) <= most:
        raise ApiError(400, f"{name}: expected a whole number from 1 to {most}, got {value[:20]!r}")
    return int(value)


def _job_json(job: JobRecord, *, detail: bool = False) -> dict[str, Any]:
    spec = job.spec
    out: dict[str, Any] = {
        "tenant": spec.tenant, "name": spec.name, "job_id": job.job_id, "description": spec.description,
        "trigger": spec.trigger.kind, "steps": [s.name for s in spec.steps], "labels": dict(spec.labels),
        "suspended": job.suspended, "version": job.version, "created_at": job.created_at,
        "updated_at": job.updated_at,
        "next_fire": (next_fire(spec.trigger, int(time.time()))
                      if spec.timed and not job.suspended else None)}
    if detail:
        out["definition"] = json.loads(spec.document)
    return out


def _run_json(run: RunRecord) -> dict[str, Any]:
    return asdict(run)


def _attempt_json(attempt: Any) -> dict[str, Any]:
    out = asdict(attempt)
    out.pop("run_id", None)
    if out.get("late_result"):
        out["late_result"] = json.loads(out["late_result"])
    return out
