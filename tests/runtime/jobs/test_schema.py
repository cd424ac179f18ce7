"""Job definitions: TOML and YAML files validated into a JobSpec, problems named by field path."""

import datetime as dt

import pytest

from runtime.jobs.errors import JobDefinitionError, ParameterError
from runtime.jobs.model import (
    CommandStep,
    CronTrigger,
    EventTrigger,
    InferenceStep,
    IntervalTrigger,
)
from runtime.jobs.schema import load_job_file, parse_job, parse_job_text, resolve_parameters

TOML = """
name = "nightly"
description = "build then embed"
labels = { team = "ml" }

[trigger]
type = "cron"
cron = "30 2 * * *"
timezone = "Europe/Berlin"

[parameters.n]
type = "int"
default = 3

[policies]
concurrency = "forbid"
misfire = { policy = "catch_up", max = 2 }
starting_deadline = "5m"
timeout = "1h"
retries = { max_attempts = 3, backoff = "2s", jitter = 0.2 }
routing = { strategy = "consistent_hash", key = "{params.n}" }
history = { succeeded = 3, failed = 5 }

[[steps]]
name = "embed"
kind = "inference"
needs = ["build"]
endpoint = "/v1/embeddings"
model = "gemma"
input = { artifact = "build:out.jsonl" }

[[steps]]
name = "build"
service = "echo@stable"
command = ["python", "make.py"]
env = { MODE = "fast" }
selector = { gpu = "a100" }
timeout = 90
"""


def _problems(doc, **kw):
    with pytest.raises(JobDefinitionError) as info:
        parse_job(doc, **kw)
    return info.value.problems


def _job(**over):
    doc = {"name": "j", "trigger": {"type": "manual"},
           "steps": [{"name": "a", "service": "echo@1.0.0", "command": ["true"]}]}
    doc.update(over)
    return doc


def test_a_toml_file_becomes_a_spec_with_steps_after_their_needs(tmp_path):
    path = tmp_path / "nightly.toml"
    path.write_text(TOML)
    spec = load_job_file(path, tenant="acme")
    assert (spec.tenant, spec.name, spec.description) == ("acme", "nightly", "build then embed")
    assert spec.trigger == CronTrigger("30 2 * * *", "Europe/Berlin")
    assert [s.name for s in spec.steps] == ["build", "embed"]
    build, embed = spec.steps
    assert isinstance(build, CommandStep) and build.timeout == 90 and build.env == (("MODE", "fast"),)
    assert isinstance(embed, InferenceStep) and embed.input.artifact == "build:out.jsonl"
    pol = spec.policies
    assert (pol.concurrency, pol.misfire, pol.catch_up_max) == ("forbid", "catch_up", 2)
    assert (pol.starting_deadline, pol.timeout, pol.history_succeeded) == (300, 3600, 3)
    assert (pol.retries.max_attempts, pol.retries.backoff, pol.retries.jitter) == (3, 2, 0.2)
    assert spec.timeout_of(build) == 90 and spec.timeout_of(embed) == 3600
    assert resolve_parameters(spec) == {"n": 3}
    assert resolve_parameters(spec, {"n": 7}) == {"n": 7}


def test_yaml_is_the_same_schema(tmp_path):
    path = tmp_path / "chain.yaml"
    path.write_text("name: chain\ntrigger: {type: event, event: job_run_finished, job: nightly, status: succeeded}\n"
                    "steps:\n  - name: a\n    service: echo@stable\n    command: [echo, hi]\n")
    spec = load_job_file(path)
    assert spec.tenant == "default"
    assert spec.trigger == EventTrigger("job_run_finished", job="nightly", status="succeeded")


def test_interval_and_once_triggers():
    assert parse_job(_job(trigger={"type": "interval", "every": "15m"})).trigger == IntervalTrigger(900, 0)
    spec = parse_job(_job(trigger={"type": "once", "at": "2027-01-01T09:00:00+01:00"}))
    assert spec.trigger.at == int(dt.datetime(2027, 1, 1, 8, tzinfo=dt.UTC).timestamp())


@pytest.mark.parametrize(("doc", "problem"), [
    (_job(steps=[{"name": "a", "service": "e@1", "command": ["x"], "needs": ["build"]}]),
     "steps[0].needs: unknown step 'build'"),
    (_job(trigger={"type": "cron", "cron": "61 * * * *"}), "trigger.cron: '61 * * * *': bad minute field"),
    (_job(trigger={"type": "cron", "cron": "* * *"}), "trigger.cron: '* * *' has 3 fields"),
    (_job(trigger={"type": "cron", "cron": "0 3 * * *", "timezone": "Mars/Olympus"}),
     "trigger.timezone: unknown timezone 'Mars/Olympus'"),
    (_job(trigger={"type": "sometimes"}), "trigger.type: expected one of cron, interval"),
    (_job(trigger={"type": "interval", "every": "soon"}), "trigger.every: expected seconds or a duration"),
    (_job(trigger={"type": "once", "at": "2027-01-01T09:00:00"}), "trigger.at: expected a time with an offset"),
    (_job(trigger={"type": "event", "event": "job_run_finished"}), "trigger.job: required"),
    (_job(steps=[]), "steps: at least one step is required"),
    (_job(steps=[{"name": "a", "service": "e@1", "comand": ["x"]}]), "steps[0].comand: unknown field"),
    (_job(steps=[{"name": "a", "service": "echo", "command": ["x"]}]), "steps[0].service: expected NAME@VERSION"),
    (_job(steps=[{"name": "a", "service": "e@1", "command": "true"}]), "steps[0].command: expected a list"),
    (_job(steps=[{"name": "a", "service": "e@1", "command": ["x"]}, {"name": "a", "service": "e@1", "command": ["y"]}]),
     "steps[1].name: duplicate step name 'a'"),
    (_job(policies={"concurrency": "sometimes"}), "policies.concurrency: expected one of allow, forbid, replace"),
    (_job(policies={"retries": {"max_attempts": 0}}), "policies.retries.max_attempts: must be from 1 to 100"),
    (_job(policies={"routing": "failover"}), "policies.routing.order: required for failover"),
    (_job(parameters={"n": {"type": "int", "default": "three"}}), "parameters.n.default: expected int, got 'three'"),
    (_job(name="bad name!"), "name: 'bad name!' must be"),
    (_job(policies={"misfire": {"policy": "catch_up", "max": 10**9}}), "policies.misfire.max: must be from 1 to 1000"),
    (_job(policies={"timeout": "nan"}), "policies.timeout: expected seconds"),
    (_job(policies={"timeout": float("inf")}), "policies.timeout: must be from"),
    (_job(steps=[{"name": "a", "service": "e@1", "command": ["x"], "env": {"FLOWCTL_ADMIN_KEY": "x"}}]),
     "steps[0].env.FLOWCTL_ADMIN_KEY: not a variable name a step may set"),
    (_job(steps=[{"name": "a", "service": "e@1", "command": ["x\0y"]}]), "steps[0].command[0]: contains a NUL"),
    (_job(trigger={"type": "cron", "cron": "0 3 * * *"}, parameters={"who": {"type": "string"}}),
     "parameters.who.default: required: a cron trigger passes no parameters"),
    (_job(steps=[{"name": "a", "kind": "inference", "endpoint": "/v1/embeddings", "input": {}}]),
     "steps[0].input: exactly one of artifact, file or inline"),
])
def test_each_problem_names_its_field(doc, problem):
    assert any(p.startswith(problem) for p in _problems(doc)), _problems(doc)


def test_a_cycle_is_named():
    steps = [{"name": n, "service": "e@1", "command": ["x"], "needs": [need]}
             for n, need in (("a", "c"), ("b", "a"), ("c", "b"))]
    (problem,) = _problems(_job(steps=steps))
    assert problem.startswith("steps[") and "cycle: " in problem
    assert all(f"{n} -> " in problem for n in "abc")


def test_every_problem_is_reported_at_once_with_the_file_name(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n[trigger]\ntype = "cron"\ncron = "nope"\n')
    with pytest.raises(JobDefinitionError) as info:
        load_job_file(path)
    assert str(info.value).startswith(f"{path}: trigger.cron:")
    assert "steps: at least one step is required" in str(info.value)


def test_syntax_errors_and_wrong_tenant():
    with pytest.raises(JobDefinitionError, match="not valid TOML"):
        parse_job_text("name = ", fmt="toml")
    with pytest.raises(JobDefinitionError, match="one job per file"):
        parse_job_text("name: a\n---\nname: b\n", fmt="yaml")
    assert _problems(_job(tenant="other"), tenant="acme") == [
        "tenant: 'other' is not the tenant applying it ('acme')"]


def test_parameter_overrides_are_checked():
    spec = parse_job(_job(parameters={"n": {"type": "int", "default": 1}, "who": {"type": "string"}}))
    with pytest.raises(ParameterError, match="parameters.who: required"):
        resolve_parameters(spec)
    with pytest.raises(ParameterError, match=r"parameters.n: expected int, got True"):
        resolve_parameters(spec, {"n": True, "who": "x"})
    with pytest.raises(ParameterError, match="parameters.zz: job 'j' declares no such parameter"):
        resolve_parameters(spec, {"zz": 1})


def test_yaml_aliases_are_refused_before_they_can_expand():
    bomb = "a: &a [x, x, x]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\nname: j\n"
    with pytest.raises(JobDefinitionError, match="YAML aliases"):
        parse_job_text(bomb, fmt="yaml")
