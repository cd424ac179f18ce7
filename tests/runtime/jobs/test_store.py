"""The run store: deterministic ids, the UNIQUE fire constraint, and the state machines."""

import json
import sqlite3

import pytest

from runtime.jobs.errors import IllegalTransition, UnknownJob
from runtime.jobs.store import NewRun, RunStore, scheduled_run_id

from .conftest import T0, job


def test_a_fire_is_materialised_once_whoever_asks(store):
    record, change = store.put_job(job(trigger={"type": "interval", "every": 60}), now=T0)
    assert change == "created" and record.planned_until == T0
    fires = [NewRun(T0 + 60, "schedule", T0 + 60), NewRun(T0 + 120, "schedule", T0 + 120)]
    assert store.materialise(record, fires, planned_until=T0 + 120, now=T0) == [
        scheduled_run_id(record.job_id, T0 + 60), scheduled_run_id(record.job_id, T0 + 120)]
    assert store.materialise(record, fires, now=T0) == []
    assert store.job_by_id(record.job_id).planned_until == T0 + 120
    with pytest.raises(sqlite3.IntegrityError, match="(?i)unique"):
        with store.transaction() as db:  # even a row with another id cannot claim the same fire
            db.execute("INSERT INTO runs SELECT 'run_other', job_id, tenant, job_name, fire_time, due_at, cause, "
                       "state, reason, params, definition, version, created_at, started_at, finished_at "
                       "FROM runs LIMIT 1")
    assert scheduled_run_id(record.job_id, T0 + 60) == scheduled_run_id(record.job_id, T0 + 60)


def test_the_store_survives_a_reopen(tmp_path):
    first = RunStore(tmp_path / "jobs.db")
    record, _ = first.put_job(job(), now=T0)
    first.close()
    again = RunStore(tmp_path / "jobs.db")
    assert again.job("default", "j").job_id == record.job_id
    assert (tmp_path / "jobs.db").stat().st_mode & 0o777 == 0o600
    again.close()


def test_illegal_transitions_are_refused(store):
    record, _ = store.put_job(job(), now=T0)
    (run_id,) = store.materialise(record, [NewRun(T0, "manual")], now=T0)
    with pytest.raises(IllegalTransition, match="cannot go from 'pending' to 'succeeded'"):
        store.set_run_state(run_id, "succeeded", now=T0)
    store.set_run_state(run_id, "running", now=T0, steps=["main"])
    store.set_step_state(run_id, "main", "running")
    n = store.new_attempt(run_id, "main", now=T0)
    assert n == 1
    with pytest.raises(IllegalTransition):
        store.set_attempt_state(run_id, "main", 1, "running", now=T0)  # pending -> running skips dispatch
    store.set_attempt_state(run_id, "main", 1, "dispatched", now=T0, epoch=3)
    store.set_attempt_state(run_id, "main", 1, "succeeded", now=T0, exit_code=0)
    with pytest.raises(IllegalTransition, match="attempt 1 of step main.*'succeeded' to 'failed'"):
        store.set_attempt_state(run_id, "main", 1, "failed", now=T0)  # a late result never overrides
    (attempt,) = store.attempts(run_id)
    assert (attempt.state, attempt.epoch, attempt.exit_code) == ("succeeded", 3, 0)
    assert store.new_attempt(run_id, "main", now=T0) == 2
    with pytest.raises(UnknownJob):
        store.run("run_nope")


def test_an_update_with_a_new_trigger_replans_and_history_is_pruned(store):
    record, _ = store.put_job(job(trigger={"type": "interval", "every": 60}), now=T0)
    store.materialise(record, [NewRun(T0 + 60, "schedule", T0 + 60)], planned_until=T0 + 60, now=T0)
    same, change = store.put_job(job(trigger={"type": "interval", "every": 60}), now=T0 + 1)
    assert change == "unchanged" and same.version == 1
    new, change = store.put_job(job(trigger={"type": "interval", "every": 30}), now=T0 + 1)
    assert change == "updated" and new.version == 2
    assert store.runs(job_id=record.job_id) == [] and new.planned_until == T0 + 1
    ids = store.materialise(new, [NewRun(T0 + i, "manual") for i in range(5)], now=T0)
    for run_id in ids:
        store.set_run_state(run_id, "running", now=T0)
        store.set_run_state(run_id, "succeeded", now=T0)
    assert store.prune_history(record.job_id, keep_succeeded=2, keep_failed=0) == 3
    assert len(store.runs(job_id=record.job_id)) == 2


def test_planning_from_a_stale_or_suspended_definition_materialises_nothing(store):
    old, _ = store.put_job(job(trigger={"type": "interval", "every": 60}), now=T0)
    store.put_job(job(trigger={"type": "interval", "every": 30}), now=T0)
    fire = [NewRun(T0 + 60, "schedule", T0 + 60)]
    assert store.materialise(old, fire, planned_until=T0 + 60, now=T0) == []  # planned from version 1
    current = store.job("default", "j")
    store.set_suspended(current.job_id, True, now=T0)
    assert store.materialise(current, fire, planned_until=T0 + 60, now=T0) == []
    assert len(store.materialise(current, [NewRun(T0, "manual")], now=T0)) == 1  # asked for: still runs
    store.delete_job("default", "j")
    with pytest.raises(UnknownJob, match="was deleted"):
        store.materialise(current, [NewRun(T0, "manual")], now=T0)


def test_a_late_result_is_kept_beside_a_settled_attempt_never_over_it(store):
    record, _ = store.put_job(job(), now=T0)
    (run_id,) = store.materialise(record, [NewRun(T0, "manual")], now=T0)
    store.set_run_state(run_id, "running", now=T0, steps=["main"])
    store.set_step_state(run_id, "main", "running")
    store.new_attempt(run_id, "main", now=T0)
    store.set_attempt_state(run_id, "main", 1, "dispatched", now=T0, epoch=1)
    store.set_attempt_state(run_id, "main", 1, "lost", now=T0 + 20, reason="node gone")
    store.new_attempt(run_id, "main", now=T0 + 21)
    store.set_attempt_state(run_id, "main", 2, "dispatched", now=T0 + 21, epoch=1)
    # The lost node comes back and reports attempt 1 finished; attempt 2 is live and reports too.
    assert store.report_result(run_id, "main", 1, "succeeded", now=T0 + 30, node="n1", exit_code=0) is False
    assert store.report_result(run_id, "main", 2, "failed", now=T0 + 31, node="n2", exit_code=2) is True
    first, second = store.attempts(run_id)
    assert (first.state, first.reason) == ("lost", "node gone")
    assert json.loads(first.late_result) == {"state": "succeeded", "node": "n1", "exit_code": 0, "reason": "",
                                             "at": T0 + 30}
    assert (second.state, second.exit_code, second.late_result) == ("failed", 2, None)


def test_run_listings_are_per_tenant_and_newest_first(store):
    a, _ = store.put_job(job("a", tenant="acme"), now=T0)
    b, _ = store.put_job(job("a", tenant="other"), now=T0)  # the same name in another tenant
    store.materialise(a, [NewRun(T0 + i, "manual") for i in range(3)], now=T0)
    store.materialise(b, [NewRun(T0, "manual")], now=T0)
    listed = store.runs(tenant="acme", job_name="a", newest_first=True, limit=2)
    assert [(r.tenant, r.due_at - T0) for r in listed] == [("acme", 2), ("acme", 1)]
    assert [r.tenant for r in store.runs(tenant="other")] == ["other"]
