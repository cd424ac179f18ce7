"""`flowctl jobs apply/ls/show/trigger/suspend/resume/rm/runs/logs/cancel/artifacts`: the plane's jobs (seed 004)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from flowctl.commands.cluster import SERVER_HELP, TOKEN_HELP

jobs_app = typer.Typer(name="jobs", help="Scheduled and event-driven jobs on the cluster (docs/jobs.md).",
                       no_args_is_help=True, rich_markup_mode=None)
TENANT_HELP = "The tenant the admin key acts in [default: default]; a tenant key acts in its own."
SUFFIXES = (".toml", ".yaml", ".yml")
MAX_FILE_BYTES = 256 * 1024
FINAL = ("succeeded", "failed", "timed_out", "cancelled", "skipped")
DEFAULT_WAIT_S = 3600.0


def _run(server: str | None, token: str | None, tenant: str | None, call):
    from flowctl.commands.cluster import plane_settings
    from runtime.clients.jobs import JobsClient

    url, key = plane_settings(server, token)
    with JobsClient(url, token=key, tenant=tenant) as client:
        return call(client)


def _table(rows: list[dict], columns: list[str]) -> None:
    from flowctl.console import echo, printable

    cells = [[printable(str("" if r.get(c) is None else r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _when(t: float | None) -> str:
    return "" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def read_definition_files(path: Path) -> list[dict[str, str]]:
    """{"name", "text"} of a file, or of a directory's .toml/.yaml/.yml files (not recursive)."""
    from flowctl.errors import CliError

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
        if not files:
            raise CliError(f"{path}: no {', '.join(SUFFIXES)} files")
    elif path.is_file():
        files = [path]
    else:
        raise CliError(f"{path}: no such file or directory")
    out = []
    for file in files:
        if file.suffix.lower() not in SUFFIXES:
            raise CliError(f"{file}: a job definition is a {', '.join(SUFFIXES)} file")
        if file.stat().st_size > MAX_FILE_BYTES:
            raise CliError(f"{file}: larger than {MAX_FILE_BYTES // 1024} KiB; is it a job definition?")
        try:
            out.append({"name": str(file), "text": file.read_text(encoding="utf-8")})
        except UnicodeDecodeError:
            raise CliError(f"{file}: not UTF-8 text") from None
    return out


@jobs_app.command("apply")
def apply(
    file: Path = typer.Option(..., "--file", "-f", help="A job definition (TOML/YAML) or a directory of them."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would change, field by field."),
    tenant: str | None = typer.Option(None, "--tenant", help=TENANT_HELP),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the changes as JSON."),
) -> None:
    """Create or update jobs from files, all or none; running runs keep their definition.

    Example: flowctl jobs apply -f examples/jobs/ --dry-run
    """
    from flowctl.console import echo, print_json, printable

    files = read_definition_files(file)
    result = _run(server, token, tenant, lambda c: c.apply(files, dry_run=dry_run))
    if json_out:
        print_json(result)
        return
    verb = {"create": "would create", "update": "would update"} if dry_run else {"create": "created",
                                                                               "update": "updated"}
    for change in result["changes"]:
        echo(f"{printable(change['tenant'])}/{printable(change['name'])}  "
             f"{verb.get(change['action'], change['action'])}")
        for field in change["fields"]:
            echo(f"    {printable(field)}")


@jobs_app.command("ls")
def ls(
    tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant's jobs (admin key) [default: all]."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the jobs as JSON."),
) -> None:
    """List jobs. Example: flowctl jobs ls --json"""
    from flowctl.console import print_json

    jobs = _run(server, token, tenant, lambda c: c.jobs())
    if json_out:
        print_json(jobs)
        return
    rows = [{**j, "steps": ",".join(j["steps"]), "state": "suspended" if j["suspended"] else "active",
             "next_fire": _when(j["next_fire"])} for j in jobs]
    _table(rows, ["tenant", "name", "trigger", "steps", "state", "next_fire"])


@jobs_app.command("show")
def show(
    name: str = typer.Argument(..., help="Job name."),
    tenant: str | None = typer.Option(None, "--tenant", help=TENANT_HELP),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the job as JSON."),
) -> None:
    """A job, its definition and its latest runs. Example: flowctl jobs show nightly-embed"""
    from flowctl.console import echo, print_json, printable

    def call(client):
        job, runs = client.job(name), client.runs(job=name, limit=5)
        return job, runs, (client.run(runs[0]["run_id"]) if runs else None)

    job, runs, latest = _run(server, token, tenant, call)
    if json_out:
        print_json({**job, "runs": runs, "latest_run": latest})
        return
    echo(f"job        {printable(job['tenant'])}/{printable(job['name'])} (version {job['version']}"
         f"{', suspended' if job['suspended'] else ''})")
    echo(f"trigger    {job['trigger']}" + (f", next {_when(job['next_fire'])}" if job["next_fire"] else ""))
    echo(f"steps      {', '.join(map(printable, job['steps']))}")
    for run in runs:
        echo(f"run        {run['run_id']}  {run['state']}  {_when(run['due_at'])}  {printable(run['reason'])}")
    for step in (latest or {}).get("steps", []):  # the latest run's steps, with an inference step's lines
        echo(f"  step     {printable(step['step'])}  {step['state']}{progress_text(step)}")


def progress_text(step: dict[str, Any]) -> str:
    """ ", 40/100 lines, 2 failed" for an inference step that reported progress, else ""."""
    progress = step.get("progress")
    if not progress:
        return ""
    total = progress["total"] if progress["total"] is not None else "?"
    return f", {progress['done']}/{total} lines, {progress['failed']} failed"


def parse_params(pairs: list[str], declared: dict[str, Any]) -> dict[str, Any]:
    """`k=v` pairs as the job's declared types (int, float, bool, string)."""
    from flowctl.errors import CliError

    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--param {pair!r}: expected NAME=VALUE")
        kind = (declared.get(key) or {}).get("type", "string")
        try:
            if kind == "int":
                params[key] = int(value)
            elif kind == "float":
                params[key] = float(value)
            elif kind == "bool":
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                params[key] = value.lower() in ("true", "1", "yes")
            else:
                params[key] = value
        except ValueError:
            raise CliError(f"--param {key}: expected {kind}, got {value!r}") from None
    return params


@jobs_app.command("trigger")
def trigger(
    name: str = typer.Argument(..., help="Job name."),
    param: list[str] = typer.Option([], "--param", "-p", help="A parameter override NAME=VALUE (repeatable)."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the run to end; exit 1 unless it succeeded."),
    timeout: float = typer.Option(DEFAULT_WAIT_S, "--timeout", help="Seconds to wait with --wait."),
    tenant: str | None = typer.Option(None, "--tenant", help=TENANT_HELP),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the run as JSON."),
) -> None:
    """Start a run of a job now. Example: flowctl jobs trigger hello --param who=ada --wait"""
    from flowctl.console import echo, print_json, printable
    from flowctl.errors import CliError

    def call(client):
        declared = client.job(name)["definition"].get("parameters", {}) if param else {}
        run = client.trigger(name, parse_params(param, declared))["run"]
        if wait:
            run = _wait(client, run["run_id"], timeout, quiet=json_out)
        return run

    run = _run(server, token, tenant, call)
    if json_out:
        print_json(run)
    elif wait:
        echo(f"run {run['run_id']} {run['state']}" + (f": {printable(run['reason'])}" if run["reason"] else ""))
    else:
        echo(f"run {run['run_id']} started")
    if wait and run["state"] != "succeeded":
        raise CliError(f"run {run['run_id']} {run['state']}" + (f": {run['reason']}" if run["reason"] else ""))


def _wait(client, run_id: str, timeout: float, *, quiet: bool) -> dict[str, Any]:
    """Poll the run until it ends, printing each step's state change to stderr."""
    import sys

    from flowctl.errors import CliError

    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    while True:
        run = client.run(run_id)
        for step in run.get("steps", []):
            label = f"{step['state']} (attempt {len(step['attempts'])}){progress_text(step)}"
            if not quiet and seen.get(step["step"]) != label:
                sys.stderr.write(f"  {step['step']}: {label}\n")
            seen[step["step"]] = label
        if run["state"] in FINAL:
            return run
        if time.monotonic() > deadline:
            raise CliError(f"run {run_id} is still {run['state']} after {timeout:g} s (it goes on; "
                           f"flowctl jobs logs {run_id} --follow)")
        time.sleep(0.25)


def _set_suspended(name, tenant, server, token, flag: bool) -> None:
    from flowctl.console import echo

    job = _run(server, token, tenant, lambda c: c.set_suspended(name, flag))
    echo(f"job {job['tenant']}/{job['name']} {'suspended' if flag else 'resumed'}")


@jobs_app.command("suspend")
def suspend(
    name: str = typer.Argument(..., help="Job name."),
    tenant: str | None = typer.Option(None, "--tenant", help=TENANT_HELP),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
) -> None:
    """Stop a job firing (its pending runs are skipped). Example: flowctl jobs suspend nightly-embed"""
    _set_suspended(name, tenant, server, token, True)


@jobs_app.command("resume")
def resume(
    name: str = typer.Argument(..., help="Job name."),
    tenant: str | None = typer.Option(None, "--tenant", help=TENANT_HELP),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
) -> None:
    """Let a suspended job fire again (fires missed meanwhile do not run). Example: flowctl jobs resume nightly-embed"""
    _set_suspended(name, tenant, server, token, False)


@jobs_app.command("rm")
def rm(
    name: str = typer.Argument(..., help="Job name."),
    tenant: str | None = typer.Option(None, "--tenant", help=TENANT_HELP),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
) -> None:
    """Remove a job; runs that started finish. Example: flowctl jobs rm hello"""
    from flowctl.console import echo

    _run(server, token, tenant, lambda c: c.delete(name))
    echo(f"job {name} removed")


@jobs_app.command("runs")
def runs(
    show: list[str] | None = typer.Argument(None, metavar="[show RUN_ID]",
                                            help="`show RUN_ID`: one run with its steps, attempts, shards "
                                                 "and artifacts."),
    job: str | None = typer.Option(None, "--job", help="Only this job's runs."),
    state: str | None = typer.Option(None, "--state", help="Only runs in these states (comma-separated)."),
    limit: int = typer.Option(20, "--limit", min=1, max=1000, help="At most this many, newest first."),
    tenant: str | None = typer.Option(None, "--tenant", help=TENANT_HELP),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the runs as JSON."),
) -> None:
    """List runs, newest first, or show one. Example: flowctl jobs runs --job hello --state failed;
    flowctl jobs runs show run_1234"""
    from flowctl.console import print_json

    if show:
        from flowctl.commands.jobs_run_detail import print_run
        from flowctl.errors import CliError

        if len(show) != 2 or show[0] != "show":
            raise CliError("usage: flowctl jobs runs show RUN_ID (or flowctl jobs runs [--job J] [--state S])")
        detail = _run(server, token, tenant, lambda c: c.run(show[1]))
        print_json(detail) if json_out else print_run(detail)
        return
    found = _run(server, token, tenant, lambda c: c.runs(job=job, state=state, limit=limit))
    if json_out:
        print_json(found)
        return
    rows = [{**r, "job": f"{r['tenant']}/{r['job_name']}", "due": _when(r["due_at"])} for r in found]
    _table(rows, ["run_id", "job", "state", "cause", "due", "reason"])


@jobs_app.command("logs")
def logs(
    run_id: str = typer.Argument(..., metavar="RUN", help="Run id."),
    step: str | None = typer.Option(None, "--step", help="Only this step's attempts."),
    attempt: int | None = typer.Option(None, "--attempt", min=1, help="Only this attempt number."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream the logs until the run ends."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
) -> None:
    """Print a run's step logs. Example: flowctl jobs logs run_0123 --step main --follow"""
    import sys

    from flowctl.console import echo

    def call(client):
        if not follow:
            sys.stdout.write(client.logs(run_id, step=step, attempt=attempt))
            return
        from runtime.clients.jobs import parse_event

        for event, data in client.follow(run_id, step=step, attempt=attempt):
            if event == "attempt":
                info = parse_event(data)
                echo(f"== {info['step']} attempt {info['attempt']} ==")
            elif event == "end":
                info = parse_event(data)
                sys.stderr.write(f"run {run_id} {info['state']}" + (f": {info['reason']}" if info["reason"] else "")
                                 + "\n")
            else:
                echo(data)

    _run(server, token, None, call)


@jobs_app.command("cancel")
def cancel(
    run_id: str = typer.Argument(..., metavar="RUN", help="Run id."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the run as JSON."),
) -> None:
    """Cancel a pending or running run (its processes are stopped). Example: flowctl jobs cancel run_0123"""
    from flowctl.console import echo, print_json

    run = _run(server, token, None, lambda c: c.cancel(run_id))
    print_json(run) if json_out else echo(f"run {run['run_id']} {run['state']}")


@jobs_app.command("artifacts")
def artifacts(
    run_id: str = typer.Argument(..., metavar="RUN", help="Run id."),
    step: str | None = typer.Option(None, "--step", help="Only this step's artifacts."),
    out: Path | None = typer.Option(None, "--output", "-o", help="Download them into DIR/STEP/PATH (each "
                                    "checked against its SHA-256; the latest attempt's file of each path)."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the artifacts as JSON."),
) -> None:
    """List a run's step artifacts, or download them with -o DIR. Example: flowctl jobs artifacts run_0123 -o out/"""
    from flowctl.console import echo, print_json

    def call(client):
        found = client.artifacts(run_id, step=step)
        if out is None:
            return found
        latest = {(a["step"], a["path"]): a for a in sorted(found, key=lambda a: a["attempt"])}
        return [{**a, "file": str(client.download_artifact(a, out))} for a in latest.values()]

    found = _run(server, token, None, call)
    if json_out:
        print_json(found)
    elif out is not None:
        echo(f"{len(found)} artifact(s) of run {run_id} in {out}")
    else:
        _table([{**a, "sha256": a["sha256"][:16]} for a in found], ["step", "attempt", "path", "size", "sha256"])


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.add_typer(jobs_app)
