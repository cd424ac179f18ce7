"""Applying a directory: validated whole before anything is applied, and a dry-run diff."""

import pytest

from runtime.jobs.apply import Change, load_definitions, plan_changes
from runtime.jobs.errors import JobDefinitionError

from .conftest import T0, job

NIGHTLY = """
name = "nightly"
[trigger]
type = "cron"
cron = "{cron}"
[[steps]]
name = "main"
service = "echo@stable"
command = ["true"]
"""
CHAIN = "name: chain\ntrigger: {type: manual}\nsteps: [{name: a, service: echo@1.0.0, command: [echo]}]\n"


def test_a_directory_is_loaded_whole_and_diffed_against_the_store(tmp_path, store):
    (tmp_path / "nightly.toml").write_text(NIGHTLY.format(cron="0 3 * * *"))
    (tmp_path / "chain.yaml").write_text(CHAIN)
    (tmp_path / "notes.txt").write_text("not a job")
    specs = load_definitions(tmp_path)
    assert sorted(s.name for s in specs) == ["chain", "nightly"]
    assert {c.name: c.action for c in plan_changes(store, specs)} == {"chain": "create", "nightly": "create"}
    for spec in specs:
        store.put_job(spec, now=T0)
    (tmp_path / "nightly.toml").write_text('description = "x"\n' + NIGHTLY.format(cron="30 2 * * *"))
    changes = plan_changes(store, load_definitions(tmp_path))
    assert Change("default", "chain", "unchanged") in changes
    assert Change("default", "nightly", "update", (
        "description: (unset) -> 'x'", "trigger.cron: '0 3 * * *' -> '30 2 * * *'")) in changes


def test_one_bad_file_or_a_name_defined_twice_stops_the_whole_directory(tmp_path):
    (tmp_path / "a.toml").write_text(NIGHTLY.format(cron="0 3 * * *"))
    (tmp_path / "b.toml").write_text(NIGHTLY.format(cron="0 4 * * *"))
    (tmp_path / "c.yaml").write_text("name: c\ntrigger: {type: cron, cron: '0 3 * * *', timezone: Mars/Olympus}\n"
                                     "steps: [{name: a, service: echo@1, command: [x]}]\n")
    with pytest.raises(JobDefinitionError) as info:
        load_definitions(tmp_path)
    assert info.value.problems == [
        f"{tmp_path / 'b.toml'}: name: job 'nightly' is also defined in {tmp_path / 'a.toml'}",
        f"{tmp_path / 'c.yaml'}: trigger.timezone: unknown timezone 'Mars/Olympus'"]
    assert [s.name for s in load_definitions(tmp_path / "a.toml")] == ["nightly"]  # one file alone is fine
    (tmp_path / "empty").mkdir()
    with pytest.raises(JobDefinitionError, match="no .toml, .yaml, .yml files"):
        load_definitions(tmp_path / "empty")


def test_put_jobs_applies_a_whole_fleet_in_one_transaction_or_nothing(store):
    specs = [job(f"j{i:04d}", {"type": "cron", "cron": f"{i % 60} * * * *"}) for i in range(2000)]
    results = store.put_jobs(specs, now=T0)
    assert [change for _, change in results] == ["created"] * 2000
    assert len(store.job_keys()) == 2000
    assert {c.action for c in plan_changes(store, specs)} == {"unchanged"}
    # One bad row (a name the table refuses twice) rolls back the rest: nothing half-applied.
    changed = [job(f"j{i:04d}", {"type": "cron", "cron": "5 * * * *"}) for i in range(3)]
    fresh = job("fresh")
    with pytest.raises(AttributeError):
        store.put_jobs([*changed, fresh, None], now=T0 + 1)  # type: ignore[list-item]
    assert store.job("default", "j0001").version == 1
    assert len(store.job_keys()) == 2000  # "fresh" was not created either
