"""ArtifactStore on real SQLite and blob stores: record, find the succeeded attempt's, refuse
bad names and sizes, and keep the hub's GC off referenced blobs until the run is pruned."""

import hashlib

import pytest

from hub_store import collect_garbage, open_data_dir
from runtime.jobs.artifacts import (
    ArtifactError,
    ArtifactLimits,
    ArtifactStore,
    ArtifactTooLarge,
    check_path,
)
from runtime.jobs.records import NewRun
from tests.runtime.jobs.conftest import job

NOW = 1_800_000_000.0


def _run_with_step(store, name="j"):
    record, _ = store.put_job(job(name), now=NOW)
    [run_id] = store.materialise(record, [NewRun(due_at=NOW, cause="manual")], now=NOW)
    store.set_run_state(run_id, "running", now=NOW, steps=["main"], job=record)
    return record, run_id


def _attempt(store, run_id, state):
    n = store.new_attempt(run_id, "main", now=NOW)
    for s in ("dispatched", "running", state):
        store.set_attempt_state(run_id, "main", n, s, now=NOW)
    return n


@pytest.fixture
def hub(tmp_path):
    data = open_data_dir(tmp_path)
    yield data
    data.close()


@pytest.fixture
def artifacts(tmp_path, store, hub):
    a = ArtifactStore.for_plane(tmp_path, hub=hub, limits=ArtifactLimits(max_file_bytes=100, max_total_bytes=150),
                                state=store.state)  # the store's engine
    yield a
    a.close()


def test_put_find_open_list(store, artifacts, tmp_path):
    _, run_id = _run_with_step(store)
    first = _attempt(store, run_id, "failed")
    artifacts.put_bytes(run_id, "main", first, "out/a.txt", b"old")
    assert artifacts.find(run_id, "main", "out/a.txt") is None  # no succeeded attempt has it
    second = _attempt(store, run_id, "succeeded")
    src = tmp_path / "src.txt"
    src.write_bytes(b"new bytes")
    made = artifacts.put_file(run_id, "main", second, "out/a.txt", src)
    assert made.digest == hashlib.sha256(b"new bytes").hexdigest() and made.size == 9
    found = artifacts.find(run_id, "main", "out/a.txt")
    assert found == made
    with artifacts.open(found) as f:
        assert f.read() == b"new bytes"
    assert [(a.attempt, a.path) for a in artifacts.list(run_id)] == [(1, "out/a.txt"), (2, "out/a.txt")]
    assert artifacts.list(run_id, step="other") == []


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a\\b", "a\0b", "a/.."])
def test_bad_paths_are_refused(bad):
    with pytest.raises(ArtifactError, match="not a plain relative path"):
        check_path(bad)


def test_limits_refuse_and_keep_nothing(store, artifacts):
    _, run_id = _run_with_step(store)
    n = _attempt(store, run_id, "succeeded")
    with pytest.raises(ArtifactTooLarge, match="limit of 100 bytes"):
        artifacts.put_bytes(run_id, "main", n, "big.bin", b"x" * 101)
    a = artifacts.store_stream([b"y" * 80])
    b = artifacts.store_stream([b"z" * 80])
    with pytest.raises(ArtifactTooLarge, match="160 bytes, over the limit of 150"):
        artifacts.record(run_id, "main", n, [("a", a.digest, 80), ("b", b.digest, 80)])
    assert artifacts.list(run_id) == []  # all or none
    with pytest.raises(ArtifactError, match="never uploaded"):
        artifacts.record(run_id, "main", n, [("c", "0" * 64, 3)])


def test_hub_gc_keeps_referenced_blobs_until_the_run_is_pruned(store, artifacts, hub):
    record, run_id = _run_with_step(store)
    n = _attempt(store, run_id, "succeeded")
    art = artifacts.put_bytes(run_id, "main", n, "kept.txt", b"keep me")
    hub.catalog.release("jobs-artifact-upload")  # as if the upload's short lease had long expired
    report = collect_garbage(hub.store, hub.catalog)
    assert report.deleted == 0 and hub.store.exists(art.digest)
    store.set_run_state(run_id, "succeeded", now=NOW)
    assert store.prune_history(record.job_id, keep_succeeded=0, keep_failed=0) == 1
    assert artifacts.sweep() == 1
    assert artifacts.list(run_id) == []
    collect_garbage(hub.store, hub.catalog)
    assert not hub.store.exists(art.digest)


def test_own_store_sweep_deletes_pruned_blobs(tmp_path, store):
    artifacts = ArtifactStore.for_plane(tmp_path, state=store.state)
    try:
        record, run_id = _run_with_step(store)
        n = _attempt(store, run_id, "succeeded")
        art = artifacts.put_bytes(run_id, "main", n, "x", b"data")
        assert artifacts.sweep(min_age_s=0) == 0 and artifacts.blobs.exists(art.digest)
        store.set_run_state(run_id, "succeeded", now=NOW)
        store.prune_history(record.job_id, keep_succeeded=0, keep_failed=0)
        assert artifacts.sweep(min_age_s=0) == 1
        assert not artifacts.blobs.exists(art.digest)
    finally:
        artifacts.close()


@pytest.mark.parametrize("name", ["../escape", "a/../../b", "/abs"])
def test_a_recorded_name_with_dots_is_refused(store, artifacts, name):
    _, run_id = _run_with_step(store)
    n = _attempt(store, run_id, "succeeded")
    blob = artifacts.store_stream([b"x"])
    with pytest.raises(ArtifactError, match="not a plain relative path"):
        artifacts.record(run_id, "main", n, [(name, blob.digest, 1)])
    assert artifacts.list(run_id) == []
