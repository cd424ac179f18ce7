"""The `steps` of a job definition: command and inference steps, and their DAG order
(unknown needs, duplicates and cycles named by field path)."""

from __future__ import annotations

import json
import re
from typing import Any, cast

from runtime.jobs.fields import (
    Problems,
    choice,
    duration,
    env_map,
    ident,
    integer,
    known,
    optional,
    string_map,
    table,
    typed,
)
from runtime.jobs.model import (
    CommandStep,
    InferenceInput,
    InferenceStep,
    Resources,
    Retries,
    Routing,
    Step,
)

MAX_ATTEMPTS = 100
MAX_CONCURRENCY = 256
_SERVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*@[A-Za-z0-9][A-Za-z0-9.+_-]*$")


def parse_retries(value: object, path: str, p: Problems) -> Retries | None:
    """A retry policy table (a job's or a step's)."""
    t = table(value, path, {"max_attempts", "backoff", "backoff_max", "jitter"}, p)
    jitter = optional(t, "jitter", lambda v, q: typed(v, (int, float), q, p), path, 0.1)
    if not 0 <= jitter <= 1:
        p.add(f"{path}.jitter", f"must be between 0 and 1, got {jitter!r}")
    return Retries(
        max_attempts=optional(t, "max_attempts", lambda v, q: integer(v, q, p, minimum=1, maximum=MAX_ATTEMPTS), path, 1),
        backoff=optional(t, "backoff", lambda v, q: duration(v, q, p, minimum=0), path, 1.0),
        backoff_max=optional(t, "backoff_max", lambda v, q: duration(v, q, p, minimum=0), path, 300.0),
        jitter=float(jitter))


def parse_routing(value: object, path: str, p: Problems) -> Routing | None:
    """A routing table, or just the strategy's name."""
    if isinstance(value, str):
        value = {"strategy": value}
    t = table(value, path, {"strategy", "key", "order"}, p)
    strategy = optional(t, "strategy", lambda v, q: choice(v, q, ("least_loaded", "round_robin",
                    "consistent_hash", "failover", "broadcast"), p), path, "least_loaded")
    key = optional(t, "key", lambda v, q: typed(v, str, q, p), path, None)
    order: list[Any] = optional(t, "order", lambda v, q: typed(v, list, q, p), path, [])
    for i, node in enumerate(order):
        typed(node, str, f"{path}.order[{i}]", p)
    if strategy == "consistent_hash" and not key:
        p.add(f"{path}.key", "required for consistent_hash (e.g. '{params.customer}')")
    if strategy == "failover" and not order:
        p.add(f"{path}.order", "required for failover: the nodes, in order of preference")
    return Routing(cast(Any, strategy), key, tuple(str(n) for n in order))


def parse_steps(value: object, p: Problems) -> tuple[Step, ...]:
    """The `steps` list, ordered so that every step comes after its needs."""
    items = typed(value, list, "steps", p) if value is not None else None
    if value is None or items == []:
        p.add("steps", "at least one step is required")
    steps: list[Step] = []
    for i, item in enumerate(items or []):
        step = _step(item, f"steps[{i}]", p)
        if step is not None:
            steps.append(step)
    return _dag_order(steps, items or [], p)


def _step(value: object, path: str, p: Problems) -> Step | None:
    t = typed(value, dict, path, p)
    if t is None:
        return None
    kind = choice(t.get("kind", "command"), f"{path}.kind", ("command", "inference"), p)
    common = {"name", "kind", "needs", "timeout", "retries", "routing"}
    name = ident(t.get("name"), f"{path}.name", p)
    needs: list[Any] = optional(t, "needs", lambda v, q: typed(v, list, q, p), path, [])
    for j, need in enumerate(needs):
        typed(need, str, f"{path}.needs[{j}]", p)
    shared: dict[str, Any] = dict(
        name=name or "", needs=tuple(n for n in needs if isinstance(n, str)),
        timeout=optional(t, "timeout", lambda v, q: duration(v, q, p), path, None),
        retries=optional(t, "retries", lambda v, q: parse_retries(v, q, p), path, None),
        routing=optional(t, "routing", lambda v, q: parse_routing(v, q, p), path, None))
    if kind == "command":
        known(t, f"{path}.", common | {"service", "command", "env", "resources", "selector"}, p)
        service = typed(t.get("service"), str, f"{path}.service", p)
        if service is not None and not _SERVICE.match(service):
            p.add(f"{path}.service", f"expected NAME@VERSION or NAME@stable, got {service!r}")
        command = typed(t.get("command"), list, f"{path}.command", p) or []
        if not command and "command" in t:
            p.add(f"{path}.command", "must not be empty")
        for j, arg in enumerate(command):
            if typed(arg, str, f"{path}.command[{j}]", p) is not None and "\0" in arg:
                p.add(f"{path}.command[{j}]", "contains a NUL character")
        r = table(t.get("resources", {}), f"{path}.resources", {"cpu", "memory_mb", "gpu"}, p)
        rp = f"{path}.resources"
        resources = Resources(
            cpu=float(optional(r, "cpu", lambda v, q: typed(v, (int, float), q, p), rp, 0.0)),
            memory_mb=optional(r, "memory_mb", lambda v, q: integer(v, q, p, minimum=0), rp, 0),
            gpu=optional(r, "gpu", lambda v, q: integer(v, q, p, minimum=0), rp, 0))
        return CommandStep(service=service or "", command=tuple(str(a) for a in command),
                           env=env_map(t.get("env", {}), f"{path}.env", p),
                           selector=string_map(t.get("selector", {}), f"{path}.selector", p),
                           resources=resources, **shared)
    if kind == "inference":
        known(t, f"{path}.", common | {"endpoint", "input", "model", "concurrency"}, p)
        endpoint = choice(t.get("endpoint"), f"{path}.endpoint",
                           ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"), p)
        source = table(t.get("input"), f"{path}.input", {"artifact", "file", "inline"}, p)
        if len(source) != 1:
            p.add(f"{path}.input", "exactly one of artifact, file or inline")
        inline = source.get("inline", [])
        lines = []
        for j, line in enumerate(inline if isinstance(inline, list) else []):
            if typed(line, dict, f"{path}.input.inline[{j}]", p) is not None:
                lines.append(json.dumps(line, sort_keys=True))
        model = optional(t, "model", lambda v, q: typed(v, str, q, p), path, None)
        return InferenceStep(endpoint=cast(Any, endpoint or "/v1/chat/completions"), model=model,
                             input=InferenceInput(source.get("artifact"), source.get("file"), tuple(lines)),
                             concurrency=optional(t, "concurrency", lambda v, q: integer(v, q, p, minimum=1, maximum=MAX_CONCURRENCY), path, 4),
                             **shared)
    return None


def _dag_order(steps: list[Step], items: list[Any], p: Problems) -> tuple[Step, ...]:
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
