"""Job definition files (TOML or YAML, one job per file) validated into a `JobSpec`.

Every problem names its field path (`steps[1].needs: unknown step 'build'`), and all of a
document's problems are reported at once, in one `JobDefinitionError`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml

from runtime.jobs import firetimes
from runtime.jobs.errors import JobDefinitionError, ParameterError
from runtime.jobs.model import (
    CommandStep,
    CronTrigger,
    EventTrigger,
    InferenceInput,
    InferenceStep,
    IntervalTrigger,
    JobSpec,
    ManualTrigger,
    OnceTrigger,
    Parameter,
    ParamValue,
    Policies,
    Resources,
    Retries,
    Routing,
    Step,
    Trigger,
    WebhookTrigger,
)

DEFAULT_TENANT = "default"
MAX_DEFINITION_BYTES = 1 << 20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PARAM_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str, "int": int, "float": (int, float), "bool": bool}
T = TypeVar("T")


class _Problems(list[str]):
    def add(self, path: str, message: str) -> None:
        self.append(f"{path}: {message}")


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
    p = _Problems()
    if not isinstance(doc, dict):
        raise JobDefinitionError(["the definition must be a table/mapping"], source=source)
    _known(doc, "", {"name", "tenant", "description", "trigger", "steps", "policies",
                     "parameters", "labels"}, p)
    name = _name(doc.get("name"), "name", p)
    file_tenant = doc.get("tenant")
    if file_tenant is not None:
        file_tenant = _name(file_tenant, "tenant", p)
        if tenant is not None and file_tenant != tenant:
            p.add("tenant", f"{file_tenant!r} is not the tenant applying it ({tenant!r})")
    description = _typed(doc.get("description", ""), str, "description", p) or ""
    trigger = _trigger(doc.get("trigger"), p)
    policies = _policies(doc.get("policies", {}), p)
    parameters = _parameters(doc.get("parameters", {}), p)
    labels = _string_map(doc.get("labels", {}), "labels", p)
    steps = _steps(doc.get("steps"), policies, p)
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


def _known(table: dict[str, Any], path: str, allowed: set[str], p: _Problems) -> None:
    for key in table:
        if key not in allowed:
            p.add(f"{path}{key}" if path else str(key), f"unknown field (expected one of {', '.join(sorted(allowed))})")


def _typed(value: object, kind: type[T] | tuple[type, ...], path: str, p: _Problems) -> T | None:
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        p.add(path, f"expected a number, got {value!r}")
        return None
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        p.add(path, f"expected {_TYPE_WORDS.get(names, names)}, got {value!r}")
        return None
    return cast(T, value)


_TYPE_WORDS = {"str": "a string", "int": "an integer", "dict": "a table", "list": "a list",
               "bool": "true or false", "int or float": "a number"}


def _name(value: object, path: str, p: _Problems) -> str | None:
    if value is None:
        p.add(path, "required")
        return None
    text = _typed(value, str, path, p)
    if text is not None and not _NAME.match(text):
        p.add(path, f"{text!r} must be 1-63 letters, digits, '.', '_' or '-'")
        return None
    return text


def _duration(value: object, path: str, p: _Problems, *, minimum: float = 0.001) -> float | None:
    if isinstance(value, str) and (m := _DURATION.match(value.strip())):
        seconds = float(m[1]) * _UNITS[m[2]]
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        p.add(path, f"expected seconds or a duration like '90s', '15m', '2h', got {value!r}")
        return None
    if seconds < minimum:
        p.add(path, f"must be at least {minimum:g} s, got {value!r}")
        return None
    return seconds


def _int(value: object, path: str, p: _Problems, *, minimum: int) -> int | None:
    number = _typed(value, int, path, p)
    if number is not None and number < minimum:
        p.add(path, f"must be at least {minimum}, got {number!r}")
        return None
    return number


def _choice(value: object, path: str, choices: tuple[str, ...], p: _Problems) -> str | None:
    if value not in choices:
        p.add(path, f"expected one of {', '.join(choices)}, got {value!r}")
        return None
    return cast(str, value)


def _string_map(value: object, path: str, p: _Problems) -> tuple[tuple[str, str], ...]:
    table = _typed(value, dict, path, p)
    if table is None:
        return ()
    for key, item in table.items():
        _typed(item, str, f"{path}.{key}", p)
    return tuple(sorted((str(k), v) for k, v in table.items() if isinstance(v, str)))


def _table(value: object, path: str, allowed: set[str], p: _Problems) -> dict[str, Any]:
    table = _typed(value, dict, path, p)
    if table is None:
        return {}
    _known(table, f"{path}.", allowed, p)
    return table


def _opt(table: dict[str, Any], key: str, parse: Callable[[object, str], T | None],
         path: str, default: T) -> T:
    if key not in table:
        return default
    value = parse(table[key], f"{path}.{key}")
    return default if value is None else value


def _instant(value: object, path: str, p: _Problems) -> int | None:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            p.add(path, f"expected an ISO 8601 time with an offset, got {value!r}")
            return None
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        p.add(path, f"expected a time with an offset (e.g. 2027-01-01T09:00:00+01:00), got {value!r}")
        return None
    return int(value.timestamp())


def _trigger(value: object, p: _Problems) -> Trigger | None:
    if value is None:
        p.add("trigger", "required (a table with a `type`)")
        return None
    table = _typed(value, dict, "trigger", p)
    if table is None:
        return None
    kind = _choice(table.get("type"), "trigger.type",
                   ("cron", "interval", "once", "manual", "webhook", "event"), p)
    fields = {"cron": {"cron", "timezone"}, "interval": {"every", "start_at"}, "once": {"at"},
              "manual": set(), "webhook": {"secret_name", "replay_window"},
              "event": {"event", "service", "job", "status"}}
    if kind is None:
        return None
    _known(table, "trigger.", fields[kind] | {"type"}, p)
    if kind == "cron":
        expr = _typed(table.get("cron"), str, "trigger.cron", p)
        tz = _typed(table.get("timezone", "UTC"), str, "trigger.timezone", p)
        if expr is not None and (problem := firetimes.cron_problem(expr)):
            p.add("trigger.cron", problem)
        if tz is not None and (problem := firetimes.timezone_problem(tz)):
            p.add("trigger.timezone", problem)
        return CronTrigger(expr or "", tz or "UTC")
    if kind == "interval":
        every = _duration(table.get("every"), "trigger.every", p, minimum=1)
        start = _instant(table["start_at"], "trigger.start_at", p) if "start_at" in table else 0
        if every is not None and every != int(every):
            p.add("trigger.every", f"must be whole seconds, got {table.get('every')!r}")
        return IntervalTrigger(int(every or 1), start or 0)
    if kind == "once":
        return OnceTrigger(_instant(table.get("at"), "trigger.at", p) or 0)
    if kind == "manual":
        return ManualTrigger()
    if kind == "webhook":
        secret = _name(table.get("secret_name"), "trigger.secret_name", p)
        window = _opt(table, "replay_window", lambda v, q: _duration(v, q, p, minimum=1), "trigger", 300.0)
        return WebhookTrigger(secret or "", int(window))
    event = _choice(table.get("event"), "trigger.event", ("service_published", "deployment_ready",
                                                          "deployment_failed", "job_run_finished"), p)
    service = _name(table["service"], "trigger.service", p) if "service" in table else None
    job = _name(table["job"], "trigger.job", p) if "job" in table else None
    status = _choice(table.get("status", "any"), "trigger.status", ("succeeded", "failed", "any"), p)
    if event == "job_run_finished" and "job" not in table:
        p.add("trigger.job", "required for event job_run_finished")
    if event == "job_run_finished" and "service" in table:
        p.add("trigger.service", "not used by event job_run_finished")
    if event and event != "job_run_finished" and ("job" in table or "status" in table):
        p.add("trigger.job" if "job" in table else "trigger.status", f"not used by event {event}")
    return EventTrigger(cast(Any, event or "job_run_finished"), service, job, cast(Any, status or "any"))


def _retries(value: object, path: str, p: _Problems) -> Retries | None:
    t = _table(value, path, {"max_attempts", "backoff", "backoff_max", "jitter"}, p)
    jitter = _opt(t, "jitter", lambda v, q: _typed(v, (int, float), q, p), path, 0.1)
    if not 0 <= jitter <= 1:
        p.add(f"{path}.jitter", f"must be between 0 and 1, got {jitter!r}")
    return Retries(
        max_attempts=_opt(t, "max_attempts", lambda v, q: _int(v, q, p, minimum=1), path, 1),
        backoff=_opt(t, "backoff", lambda v, q: _duration(v, q, p, minimum=0), path, 1.0),
        backoff_max=_opt(t, "backoff_max", lambda v, q: _duration(v, q, p, minimum=0), path, 300.0),
        jitter=float(jitter))


def _routing(value: object, path: str, p: _Problems) -> Routing | None:
    if isinstance(value, str):
        value = {"strategy": value}
    t = _table(value, path, {"strategy", "key", "order"}, p)
    strategy = _opt(t, "strategy", lambda v, q: _choice(v, q, ("least_loaded", "round_robin",
                    "consistent_hash", "failover", "broadcast"), p), path, "least_loaded")
    key = _opt(t, "key", lambda v, q: _typed(v, str, q, p), path, None)
    order: list[Any] = _opt(t, "order", lambda v, q: _typed(v, list, q, p), path, [])
    for i, node in enumerate(order):
        _typed(node, str, f"{path}.order[{i}]", p)
    if strategy == "consistent_hash" and not key:
        p.add(f"{path}.key", "required for consistent_hash (e.g. '{params.customer}')")
    if strategy == "failover" and not order:
        p.add(f"{path}.order", "required for failover: the nodes, in order of preference")
    return Routing(cast(Any, strategy), key, tuple(str(n) for n in order))


def _policies(value: object, p: _Problems) -> Policies:
    path = "policies"
    t = _table(value, path, {"concurrency", "misfire", "starting_deadline", "timeout", "retries",
                             "routing", "history", "suspend"}, p)
    misfire, catch_up = t.get("misfire", "run_once"), 1
    if isinstance(misfire, dict):
        m = _table(misfire, f"{path}.misfire", {"policy", "max"}, p)
        misfire = m.get("policy")
        catch_up = _opt(m, "max", lambda v, q: _int(v, q, p, minimum=1), f"{path}.misfire", 1)
        if misfire != "catch_up" and "max" in m:
            p.add(f"{path}.misfire.max", "only for policy catch_up")
    misfire_path = f"{path}.misfire.policy" if isinstance(t.get("misfire"), dict) else f"{path}.misfire"
    history = _table(t.get("history", {}), f"{path}.history", {"succeeded", "failed"}, p)
    opt_duration = lambda v, q: _duration(v, q, p)  # noqa: E731
    return Policies(
        concurrency=cast(Any, _opt(t, "concurrency", lambda v, q: _choice(v, q, ("allow", "forbid", "replace"), p),
                                   path, "allow")),
        misfire=cast(Any, _choice(misfire, misfire_path, ("skip", "run_once", "catch_up"), p) or "run_once"),
        catch_up_max=catch_up,
        starting_deadline=_opt(t, "starting_deadline", opt_duration, path, None),
        timeout=_opt(t, "timeout", opt_duration, path, None),
        retries=_opt(t, "retries", lambda v, q: _retries(v, q, p), path, Retries()),
        routing=_opt(t, "routing", lambda v, q: _routing(v, q, p), path, Routing()),
        history_succeeded=_opt(history, "succeeded", lambda v, q: _int(v, q, p, minimum=0), f"{path}.history", 10),
        history_failed=_opt(history, "failed", lambda v, q: _int(v, q, p, minimum=0), f"{path}.history", 10),
        suspend=_opt(t, "suspend", lambda v, q: _typed(v, bool, q, p), path, False))


def _parameters(value: object, p: _Problems) -> tuple[tuple[str, Parameter], ...]:
    table = _typed(value, dict, "parameters", p) or {}
    out = []
    for key, item in table.items():
        path = f"parameters.{key}"
        if _name(key, path, p) is None:
            continue
        t = _table(item, path, {"type", "default", "description"}, p)
        kind = _choice(t.get("type"), f"{path}.type", tuple(_PARAM_TYPES), p)
        default = t.get("default")
        if kind and default is not None and not _is_type(default, kind):
            p.add(f"{path}.default", f"expected {kind}, got {default!r}")
        description = _opt(t, "description", lambda v, q: _typed(v, str, q, p), path, "")
        if kind:
            out.append((key, Parameter(cast(Any, kind), default, description)))
    return tuple(out)


def _is_type(value: object, kind: str) -> bool:
    if isinstance(value, bool) and kind != "bool":
        return False
    return isinstance(value, _PARAM_TYPES[kind])


def _steps(value: object, policies: Policies, p: _Problems) -> tuple[Step, ...]:
    items = _typed(value, list, "steps", p) if value is not None else None
    if value is None or items == []:
        p.add("steps", "at least one step is required")
    steps: list[Step] = []
    for i, item in enumerate(items or []):
        step = _step(item, f"steps[{i}]", p)
        if step is not None:
            steps.append(step)
    return _dag_order(steps, items or [], p)


def _step(value: object, path: str, p: _Problems) -> Step | None:
    t = _typed(value, dict, path, p)
    if t is None:
        return None
    kind = _choice(t.get("kind", "command"), f"{path}.kind", ("command", "inference"), p)
    common = {"name", "kind", "needs", "timeout", "retries", "routing"}
    name = _name(t.get("name"), f"{path}.name", p)
    needs: list[Any] = _opt(t, "needs", lambda v, q: _typed(v, list, q, p), path, [])
    for j, need in enumerate(needs):
        _typed(need, str, f"{path}.needs[{j}]", p)
    shared: dict[str, Any] = dict(
        name=name or "", needs=tuple(n for n in needs if isinstance(n, str)),
        timeout=_opt(t, "timeout", lambda v, q: _duration(v, q, p), path, None),
        retries=_opt(t, "retries", lambda v, q: _retries(v, q, p), path, None),
        routing=_opt(t, "routing", lambda v, q: _routing(v, q, p), path, None))
    if kind == "command":
        _known(t, f"{path}.", common | {"service", "command", "env", "resources", "selector"}, p)
        service = _typed(t.get("service"), str, f"{path}.service", p)
        if service is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*@[A-Za-z0-9][A-Za-z0-9.+_-]*$", service):
            p.add(f"{path}.service", f"expected NAME@VERSION or NAME@stable, got {service!r}")
        command = _typed(t.get("command"), list, f"{path}.command", p) or []
        if not command and "command" in t:
            p.add(f"{path}.command", "must not be empty")
        for j, arg in enumerate(command):
            _typed(arg, str, f"{path}.command[{j}]", p)
        r = _table(t.get("resources", {}), f"{path}.resources", {"cpu", "memory_mb", "gpu"}, p)
        rp = f"{path}.resources"
        resources = Resources(
            cpu=float(_opt(r, "cpu", lambda v, q: _typed(v, (int, float), q, p), rp, 0.0)),
            memory_mb=_opt(r, "memory_mb", lambda v, q: _int(v, q, p, minimum=0), rp, 0),
            gpu=_opt(r, "gpu", lambda v, q: _int(v, q, p, minimum=0), rp, 0))
        return CommandStep(service=service or "", command=tuple(str(a) for a in command),
                           env=_string_map(t.get("env", {}), f"{path}.env", p),
                           selector=_string_map(t.get("selector", {}), f"{path}.selector", p),
                           resources=resources, **shared)
    if kind == "inference":
        _known(t, f"{path}.", common | {"endpoint", "input", "model", "concurrency"}, p)
        endpoint = _choice(t.get("endpoint"), f"{path}.endpoint",
                           ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"), p)
        source = _table(t.get("input"), f"{path}.input", {"artifact", "file", "inline"}, p)
        if len(source) != 1:
            p.add(f"{path}.input", "exactly one of artifact, file or inline")
        inline = source.get("inline", [])
        lines = []
        for j, line in enumerate(inline if isinstance(inline, list) else []):
            if _typed(line, dict, f"{path}.input.inline[{j}]", p) is not None:
                lines.append(json.dumps(line, sort_keys=True))
        model = _opt(t, "model", lambda v, q: _typed(v, str, q, p), path, None)
        return InferenceStep(endpoint=cast(Any, endpoint or "/v1/chat/completions"), model=model,
                             input=InferenceInput(source.get("artifact"), source.get("file"), tuple(lines)),
                             concurrency=_opt(t, "concurrency", lambda v, q: _int(v, q, p, minimum=1), path, 4),
                             **shared)
    return None


def _dag_order(steps: list[Step], items: list[Any], p: _Problems) -> tuple[Step, ...]:
    """The steps with every step after its needs; problems for duplicates, unknown needs, cycles."""
    index: dict[str, int] = {}
    for i, step in enumerate(steps):
        if step.name in index:
            p.add(f"steps[{i}].name", f"duplicate step name {step.name!r}")
        index.setdefault(step.name, i)
    for i, step in enumerate(steps):
        for need in step.needs:
            if need not in index:
                p.add(f"steps[{i}].needs", f"unknown step {need!r}")
            elif need == step.name:
                p.add(f"steps[{i}].needs", f"step {need!r} needs itself")
    if p:
        return tuple(steps)
    ordered: list[Step] = []
    state: dict[str, str] = {}
    by_name = {s.name: s for s in steps}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = trail[trail.index(name):] + [name]
            p.add(f"steps[{index[name]}].needs", f"cycle: {' -> '.join(cycle)}")
            raise _Cycle
        state[name] = "visiting"
        for need in by_name[name].needs:
            visit(need, [*trail, name])
        state[name] = "done"
        ordered.append(by_name[name])

    try:
        for step in steps:
            visit(step.name, [])
    except _Cycle:
        return tuple(steps)
    return tuple(ordered)


class _Cycle(Exception):
    pass
