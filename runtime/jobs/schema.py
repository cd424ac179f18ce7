"""Job definition files (TOML or YAML, one job per file) validated into a `JobSpec`.

Every problem names its field path (`steps[1].needs: unknown step 'build'`), and all of a
document's problems are reported at once, in one `JobDefinitionError`.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, cast

import yaml

from runtime.jobs import firetimes
from runtime.jobs.errors import JobDefinitionError, ParameterError
from runtime.jobs.fields import (
    Problems,
    choice,
    duration,
    ident,
    instant,
    integer,
    known,
    optional,
    string_map,
    table,
    typed,
)
from runtime.jobs.model import (
    CronTrigger,
    EventTrigger,
    IntervalTrigger,
    JobSpec,
    ManualTrigger,
    OnceTrigger,
    Parameter,
    ParamValue,
    Policies,
    Retries,
    Routing,
    Trigger,
    WebhookTrigger,
)
from runtime.jobs.stepdefs import parse_retries, parse_routing, parse_steps

DEFAULT_TENANT = "default"
MAX_DEFINITION_BYTES = 1 << 20
MAX_CATCH_UP = 1000
MAX_HISTORY = 10_000
_PARAM_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str, "int": int, "float": (int, float), "bool": bool}


def load_job_file(path: Path, *, tenant: str | None = None) -> JobSpec:
    """Read and validate one job definition file (.toml, .yaml or .yml)."""
    try:
        if path.stat().st_size > MAX_DEFINITION_BYTES:
            raise JobDefinitionError([f"larger than {MAX_DEFINITION_BYTES} bytes"], source=str(path))
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise JobDefinitionError([f"cannot read: {e}"], source=str(path)) from None
    return parse_job_text(text, fmt=path.suffix.lstrip(".").lower(), source=str(path), tenant=tenant)


def parse_job_text(text: str, *, fmt: str, source: str | None = None,
                   tenant: str | None = None) -> JobSpec:
    """Validate a definition given as TOML (`fmt` "toml") or YAML ("yaml"/"yml") text."""
    try:
        if fmt == "toml":
            doc: Any = tomllib.loads(text)
        elif fmt in ("yaml", "yml"):
            if any(isinstance(e, yaml.AliasEvent) for e in yaml.parse(text, Loader=yaml.SafeLoader)):
                # An alias re-uses a node; nested ones expand exponentially when stored as JSON.
                raise JobDefinitionError(["YAML aliases (*name) are not supported; write the value out"],
                                         source=source)
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
            if len(docs) > 1:
                raise JobDefinitionError([f"{len(docs)} YAML documents; one job per file"], source=source)
            doc = docs[0] if docs else {}
        else:
            raise JobDefinitionError([f"unknown format {fmt!r} (use .toml, .yaml or .yml)"], source=source)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        message = " ".join(str(e).split())
        raise JobDefinitionError([f"not valid {fmt.upper()}: {message}"], source=source) from None
    return parse_job(doc, source=source, tenant=tenant)


def parse_job(doc: object, *, source: str | None = None, tenant: str | None = None) -> JobSpec:
    """Validate a decoded definition; `tenant` (when given) must match the file's, if it names one."""
    p = Problems()
    if not isinstance(doc, dict):
        raise JobDefinitionError(["the definition must be a table/mapping"], source=source)
    known(doc, "", {"name", "tenant", "description", "trigger", "steps", "policies",
                     "parameters", "labels"}, p)
    name = ident(doc.get("name"), "name", p)
    file_tenant = doc.get("tenant")
    if file_tenant is not None:
        file_tenant = ident(file_tenant, "tenant", p)
        if tenant is not None and file_tenant != tenant:
            p.add("tenant", f"{file_tenant!r} is not the tenant applying it ({tenant!r})")
    description = typed(doc.get("description", ""), str, "description", p) or ""
    trigger = _trigger(doc.get("trigger"), p)
    policies = _policies(doc.get("policies", {}), p)
    parameters = _parameters(doc.get("parameters", {}), p)
    labels = string_map(doc.get("labels", {}), "labels", p)
    steps = parse_steps(doc.get("steps"), p)
    if isinstance(trigger, CronTrigger | IntervalTrigger | OnceTrigger | EventTrigger):
        for key, param in parameters:
            if param.default is None:
                p.add(f"parameters.{key}.default", f"required: a {trigger.kind} trigger passes no parameters")
    if p:
        raise JobDefinitionError(p, source=source)
    return JobSpec(tenant=tenant or file_tenant or DEFAULT_TENANT, name=cast(str, name),
                   trigger=cast(Trigger, trigger), steps=steps, description=description,
                   policies=policies, parameters=parameters, labels=labels, document=to_json(doc))


def to_json(doc: object) -> str:
    """A decoded definition as JSON (TOML/YAML datetimes become ISO strings) for the store."""
    return json.dumps(doc, sort_keys=True, default=lambda v: v.isoformat())


def resolve_parameters(spec: JobSpec, overrides: dict[str, object] | None = None) -> dict[str, ParamValue]:
    """The run's parameters: the job's defaults with `overrides` applied, each checked for type."""
    overrides = dict(overrides or {})
    declared = dict(spec.parameters)
    for key in overrides:
        if key not in declared:
            raise ParameterError(f"parameters.{key}: job {spec.name!r} declares no such parameter")
    values: dict[str, ParamValue] = {}
    for key, param in declared.items():
        value = overrides.get(key, param.default)
        if value is None:
            raise ParameterError(f"parameters.{key}: required ({param.type}), no default")
        if not _is_type(value, param.type):
            raise ParameterError(f"parameters.{key}: expected {param.type}, got {value!r}")
        values[key] = float(cast(float, value)) if param.type == "float" else cast(ParamValue, value)
    return values


# -- fields ------------------------------------------------------------------------------


def _trigger(value: object, p: Problems) -> Trigger | None:
    if value is None:
        p.add("trigger", "required (a table with a `type`)")
        return None
    table = typed(value, dict, "trigger", p)
    if table is None:
        return None
    kind = choice(table.get("type"), "trigger.type",
                   ("cron", "interval", "once", "manual", "webhook", "event"), p)
    fields = {"cron": {"cron", "timezone"}, "interval": {"every", "start_at"}, "once": {"at"},
              "manual": set(), "webhook": {"secret_name", "replay_window"},
              "event": {"event", "service", "job", "status"}}
    if kind is None:
        return None
    known(table, "trigger.", fields[kind] | {"type"}, p)
    if kind == "cron":
        expr = typed(table.get("cron"), str, "trigger.cron", p)
        tz = typed(table.get("timezone", "UTC"), str, "trigger.timezone", p)
        if expr is not None and (problem := firetimes.cron_problem(expr)):
            p.add("trigger.cron", problem)
        if tz is not None and (problem := firetimes.timezone_problem(tz)):
            p.add("trigger.timezone", problem)
        return CronTrigger(expr or "", tz or "UTC")
    if kind == "interval":
        every = duration(table.get("every"), "trigger.every", p, minimum=1)
        start = instant(table["start_at"], "trigger.start_at", p) if "start_at" in table else 0
        if every is not None and every != int(every):
            p.add("trigger.every", f"must be whole seconds, got {table.get('every')!r}")
        return IntervalTrigger(int(every or 1), start or 0)
    if kind == "once":
        return OnceTrigger(instant(table.get("at"), "trigger.at", p) or 0)
    if kind == "manual":
        return ManualTrigger()
    if kind == "webhook":
        secret = ident(table.get("secret_name"), "trigger.secret_name", p)
        window = optional(table, "replay_window", lambda v, q: duration(v, q, p, minimum=1), "trigger", 300.0)
        return WebhookTrigger(secret or "", int(window))
    event = choice(table.get("event"), "trigger.event", ("service_published", "deployment_ready",
                                                          "deployment_failed", "job_run_finished"), p)
    service = ident(table["service"], "trigger.service", p) if "service" in table else None
    job = ident(table["job"], "trigger.job", p) if "job" in table else None
    status = choice(table.get("status", "any"), "trigger.status", ("succeeded", "failed", "any"), p)
    if event == "job_run_finished" and "job" not in table:
        p.add("trigger.job", "required for event job_run_finished")
    if event == "job_run_finished" and "service" in table:
        p.add("trigger.service", "not used by event job_run_finished")
    if event and event != "job_run_finished" and ("job" in table or "status" in table):
        p.add("trigger.job" if "job" in table else "trigger.status", f"not used by event {event}")
    return EventTrigger(cast(Any, event or "job_run_finished"), service, job, cast(Any, status or "any"))


def _policies(value: object, p: Problems) -> Policies:
    path = "policies"
    t = table(value, path, {"concurrency", "misfire", "starting_deadline", "timeout", "retries",
                             "routing", "history", "suspend"}, p)
    misfire, catch_up = t.get("misfire", "run_once"), 1
    if isinstance(misfire, dict):
        m = table(misfire, f"{path}.misfire", {"policy", "max"}, p)
        misfire = m.get("policy")
        catch_up = optional(m, "max", lambda v, q: integer(v, q, p, minimum=1, maximum=MAX_CATCH_UP), f"{path}.misfire", 1)
        if misfire != "catch_up" and "max" in m:
            p.add(f"{path}.misfire.max", "only for policy catch_up")
    misfire_path = f"{path}.misfire.policy" if isinstance(t.get("misfire"), dict) else f"{path}.misfire"
    history = table(t.get("history", {}), f"{path}.history", {"succeeded", "failed"}, p)
    opt_duration = lambda v, q: duration(v, q, p)  # noqa: E731
    return Policies(
        concurrency=cast(Any, optional(t, "concurrency", lambda v, q: choice(v, q, ("allow", "forbid", "replace"), p),
                                   path, "allow")),
        misfire=cast(Any, choice(misfire, misfire_path, ("skip", "run_once", "catch_up"), p) or "run_once"),
        catch_up_max=catch_up,
        starting_deadline=optional(t, "starting_deadline", opt_duration, path, None),
        timeout=optional(t, "timeout", opt_duration, path, None),
        retries=optional(t, "retries", lambda v, q: parse_retries(v, q, p), path, Retries()),
        routing=optional(t, "routing", lambda v, q: parse_routing(v, q, p), path, Routing()),
        history_succeeded=optional(history, "succeeded", lambda v, q: integer(v, q, p, minimum=0, maximum=MAX_HISTORY), f"{path}.history", 10),
        history_failed=optional(history, "failed", lambda v, q: integer(v, q, p, minimum=0, maximum=MAX_HISTORY), f"{path}.history", 10),
        suspend=optional(t, "suspend", lambda v, q: typed(v, bool, q, p), path, False))


def _parameters(value: object, p: Problems) -> tuple[tuple[str, Parameter], ...]:
    declared = typed(value, dict, "parameters", p) or {}
    out = []
    for key, item in declared.items():
        path = f"parameters.{key}"
        if ident(key, path, p) is None:
            continue
        t = table(item, path, {"type", "default", "description"}, p)
        kind = choice(t.get("type"), f"{path}.type", tuple(_PARAM_TYPES), p)
        default = t.get("default")
        if kind and default is not None and not _is_type(default, kind):
            p.add(f"{path}.default", f"expected {kind}, got {default!r}")
        description = optional(t, "description", lambda v, q: typed(v, str, q, p), path, "")
        if kind:
            out.append((key, Parameter(cast(Any, kind), default, description)))
    return tuple(out)


def _is_type(value: object, kind: str) -> bool:
    if isinstance(value, bool) and kind != "bool":
        return False
    return isinstance(value, _PARAM_TYPES[kind])

