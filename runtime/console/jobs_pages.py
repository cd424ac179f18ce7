"""The console's jobs pages: definitions, runs with their DAG and attempts, live logs, and the forms
that trigger (with parameters), cancel, suspend and resume."""

from __future__ import annotations

from html import escape
from typing import Any

import trio
from quart import Response, request

from runtime.api.guard import note_audit
from runtime.console.actions import attempt, form
from runtime.console.context import ENV, PREFIX, ConsoleParts, Denied, done, need, page
from runtime.console.live import fragment_events
from runtime.errors import FlowError
from runtime.jobs.engine import FINAL_RUN_STATES
from runtime.jobs.errors import UnknownJob
from runtime.jobs.logstream import follow, read_log

MAX_RUNS = 100
MAX_LOG_CHARS = 64 * 1024


def parameter_value(kind: str, text: str) -> object:
    """A form field's text as a job parameter of type `kind` (ValueError naming the problem)."""
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "bool":
        if text.lower() not in ("true", "false"):
            raise ValueError(f"expected true or false, got {text!r}")
        return text.lower() == "true"
    return text


def dag_svg(steps: list[tuple[str, tuple[str, ...], str]]) -> str:
    """The steps (name, needs, state) as an SVG graph: one column per depth, an arrow per need."""
    depth: dict[str, int] = {}
    for name, needs, _ in steps:  # needs come first in a validated spec
        depth[name] = 1 + max((depth.get(n, 0) for n in needs), default=-1)
    rows: dict[int, int] = {}
    where: dict[str, tuple[int, int]] = {}
    for name, _, _ in steps:
        col = depth[name]
        where[name] = (20 + col * 180, 20 + rows.get(col, 0) * 56)
        rows[col] = rows.get(col, 0) + 1
    width = 40 + (max(depth.values(), default=0) + 1) * 180
    height = 40 + max(rows.values(), default=1) * 56
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="step graph" class="dag" '
           f'viewBox="0 0 {width} {height}" width="{width}" height="{height}"><title>step graph</title>']
    for name, needs, _ in steps:
        x, y = where[name]
        for needed in needs:
            nx, ny = where[needed]
            out.append(f'<line x1="{nx + 140}" y1="{ny + 18}" x2="{x}" y2="{y + 18}" class="edge"/>')
    for name, _, state in steps:
        x, y = where[name]
        out.append(f'<g class="step state-{escape(state)}"><rect x="{x}" y="{y}" width="140" height="36" rx="6"/>'
                   f'<text x="{x + 8}" y="{y + 15}">{escape(name[:20])}</text>'
                   f'<text x="{x + 8}" y="{y + 30}" class="sub">{escape(state)}</text></g>')
    out.append("</svg>")
    return "".join(out)


def register(app: Any, parts: ConsoleParts) -> None:
    """Add the jobs pages and forms."""

    def role() -> Any:
        if parts.jobs is None:
            raise Denied(404, "the jobs role does not run in this plane process")
        return parts.jobs

    async def db(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))
        except UnknownJob as exc:
            raise Denied(404, str(exc)) from None

    async def visible_run(run_id: str) -> Any:
        principal = need("jobs.read")
        run = await db(role().store.run, run_id)
        if principal.tenant is not None and run.tenant != principal.tenant:
            raise Denied(404, f"no run {run_id!r}")
        return run

    @app.get(f"{PREFIX}/jobs")
    async def console_jobs() -> Response:
        principal = need("jobs.read")
        store = role().store
        jobs = await db(store.jobs, principal.tenant)
        runs = await db(store.runs, tenant=principal.tenant, limit=MAX_RUNS, newest_first=True)
        return page("jobs.html", title="Jobs", jobs=jobs, runs=runs, notice=request.args.get("notice", ""))

    @app.get(f"{PREFIX}/jobs/<tenant>/<name>")
    async def console_job(tenant: str, name: str) -> Response:
        need("jobs.read", tenant)
        store = role().store
        job = await db(store.job, tenant, name)
        runs = await db(store.runs, job_id=job.job_id, limit=MAX_RUNS, newest_first=True)
        return page("job.html", title=f"Job {name}", job=job, runs=runs, notice=request.args.get("notice", ""))

    @app.get(f"{PREFIX}/runs/<run_id>")
    async def console_run(run_id: str) -> Response:
        run = await visible_run(run_id)
        store = role().store
        spec = await db(store.run_spec, run_id)
        steps = {s.step: s for s in await db(store.steps, run_id)}
        attempts = await db(store.attempts, run_id)
        logs = []
        for a in attempts:
            text = await trio.to_thread.run_sync(read_log, role().executor.log_path(run_id, a.step, a.attempt))
            logs.append((a, text[-MAX_LOG_CHARS:]))
        graph = await run_graph(run_id)
        return page("run.html", title=f"Run {run_id}", run=run, spec=spec, steps=steps, attempts=attempts,
                    logs=logs, graph=graph, notice=request.args.get("notice", ""))

    async def run_graph(run_id: str) -> str:
        store = role().store
        spec = await db(store.run_spec, run_id)
        steps = {s.step: s for s in await db(store.steps, run_id)}
        return dag_svg([(s.name, tuple(s.needs), steps[s.name].state if s.name in steps else "pending")
                        for s in spec.steps])

    @app.get(f"{PREFIX}/runs/<run_id>/live")
    async def console_run_live(run_id: str) -> Response:
        await visible_run(run_id)

        async def render() -> tuple[dict[str, str], bool]:
            run = await db(role().store.run, run_id)
            attempts = await db(role().store.attempts, run_id)
            graph = await run_graph(run_id)
            return ({"run-graph": ENV.get_template("_run_graph.html").render(graph=graph),
                     "run-attempts": ENV.get_template("_run_attempts.html").render(attempts=attempts)},
                    run.state in FINAL_RUN_STATES)
        return Response(fragment_events(render), 200, {"Content-Type": "text/event-stream",
                                                       "Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get(f"{PREFIX}/runs/<run_id>/log")
    async def console_run_log(run_id: str) -> Response:
        await visible_run(run_id)
        store = role().store
        steps = [s.name for s in (await db(store.run_spec, run_id)).steps]
        stream = follow(store, role().executor.log_path, run_id, steps, None)
        return Response(stream, 200, {"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                      "X-Accel-Buffering": "no"})

    @app.post(f"{PREFIX}/jobs/<tenant>/<name>/trigger")
    async def console_trigger(tenant: str, name: str) -> Response:
        need("jobs.write", tenant)
        note_audit(request, tenant=tenant)
        job = await db(role().store.job, tenant, name)
        fields = await form()
        params: dict[str, object] = {}
        for key, param in job.spec.parameters:
            text = fields.get(f"param.{key}", "")
            if text:
                try:
                    params[key] = parameter_value(param.type, text)
                except ValueError as exc:
                    raise Denied(400, f"parameter {key}: {exc}") from None
        try:
            run_id = await role().engine.trigger(tenant, name, params)
        except FlowError as exc:  # a parameter of the wrong type, a job gone meanwhile
            return done(f"{PREFIX}/jobs/{tenant}/{name}", f"error: {exc}")
        return done(f"{PREFIX}/runs/{run_id}")

    @app.post(f"{PREFIX}/jobs/<tenant>/<name>/<action>")
    async def console_suspend(tenant: str, name: str, action: str) -> Response:
        need("jobs.write", tenant)
        if action not in ("suspend", "resume"):
            raise Denied(404, f"no action {action!r} (suspend or resume)")
        note_audit(request, tenant=tenant)

        async def change() -> str:
            await role().engine.set_suspended(tenant, name, action == "suspend")
            return f"job {name} {'suspended' if action == 'suspend' else 'resumed'}"
        return await attempt(f"{PREFIX}/jobs/{tenant}/{name}", change)

    @app.post(f"{PREFIX}/runs/<run_id>/cancel")
    async def console_cancel(run_id: str) -> Response:
        run = await visible_run(run_id)
        need("jobs.write", run.tenant)
        note_audit(request, tenant=run.tenant)

        async def cancel() -> str:
            with trio.move_on_after(5):
                await role().engine.cancel(run_id, reason="cancelled from the console")
            return f"run {run_id} cancelled"
        return await attempt(f"{PREFIX}/runs/{run_id}", cancel)
