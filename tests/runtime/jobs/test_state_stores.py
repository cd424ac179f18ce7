"""The jobs role's smaller stores on both state engines: shards, inference checkpoints, batches, files."""

import pytest

from runtime.jobs.batch_store import FIELDS, BatchStore
from runtime.jobs.checkpoints import Checkpoints, Progress
from runtime.jobs.openai_files import FileStore
from runtime.jobs.records import NewRun
from runtime.jobs.shards import ShardRecords
from tests.runtime.jobs.conftest import job

NOW = 1_800_000_000.0


def test_shard_rows_replace_by_key_and_go_with_their_run(store):
    shards = ShardRecords(store.state or store.path)
    try:
        record, _ = store.put_job(job(), now=NOW)
        [run_id] = store.materialise(record, [NewRun(due_at=NOW, cause="manual")], now=NOW)
        shards.put(run_id, "main", 1, 0, 2, "running", node="n1")
        shards.put(run_id, "main", 1, 0, 2, "succeeded", node="n1", exit_code=0)
        shards.put(run_id, "main", 1, 1, 2, "failed", node="n2", exit_code=3, reason="boom")
        assert [(s.shard, s.state) for s in shards.of(run_id)] == [(0, "succeeded"), (1, "failed")]
        assert shards.earlier(run_id, "main", 2) == (2, {0: shards.of(run_id, "main", 1)[0]})
        assert shards.sweep() == 0
        with store.transaction() as db:  # the history limits removed the run
            db.execute("DELETE FROM runs WHERE run_id=?", (run_id,))
        assert shards.sweep() == 2 and shards.of(run_id) == []
    finally:
        shards.close()


@pytest.fixture
def where(store, tmp_path):
    """The state of the `store` fixture's engine for the plane's other jobs stores (None: SQLite files)."""
    return store.state


def test_checkpoints_count_lines_and_keep_the_last_answer(where, tmp_path):
    points = Checkpoints(where or tmp_path / "jobs" / "inference.db")
    try:
        assert points.progress("r", "s") is None
        points.set_total("r", "s", 3)
        points.set_total("r", "s", 4)
        points.add("r", "s", [(0, False, '{"a": 1}'), (1, True, '{"error": 1}')])
        points.add("r", "s", [(1, False, '{"a": 2}')])  # a retried line replaces its row
        assert points.progress("r", "s") == Progress(2, 0, 4)
        assert points.done_lines("r", "s") == {0, 1}
        assert list(points.rows("r", "s")) == [(0, False, '{"a": 1}'), (1, False, '{"a": 2}')]
    finally:
        points.close()


def _batch(batch_id, created_at, status="validating", tenant="acme"):
    return {f: None for f in FIELDS} | {
        "id": batch_id, "tenant": tenant, "endpoint": "/v1/chat/completions", "input_file_id": "file-1",
        "completion_window": "24h", "metadata": {"k": "v"}, "job": "j", "status": status, "total": 0,
        "completed": 0, "failed": 0, "created_at": created_at}


def test_batches_list_newest_first_with_ties_in_insertion_order(where, tmp_path):
    batches = BatchStore(tmp_path / "openai", where)
    try:
        for batch_id, created in (("b1", 10), ("b2", 20), ("b3", 20)):
            batches.insert(_batch(batch_id, created))
        batches.insert(_batch("other", 30, tenant="zeta"))
        batches.update("b1", status="completed", completed_at=40)
        assert [b["id"] for b in batches.list(tenant="acme")] == ["b3", "b2", "b1"]
        assert [b["id"] for b in batches.list(tenant="acme", open_only=True)] == ["b3", "b2"]
        assert batches.get("b1", "acme")["metadata"] == {"k": "v"} and batches.get("b1", "zeta") is None
        assert batches.get("other")["tenant"] == "zeta"
    finally:
        batches.close()


def test_files_are_per_tenant(where, tmp_path):
    files = FileStore(tmp_path / "openai", where)
    try:
        one = files.add_bytes("acme", "a.jsonl", "batch", b"{}\n", lines=1)
        two = files.add_bytes("acme", "b.jsonl", "batch", b"{}\n{}\n", lines=2)
        assert files.get("acme", one.id) == one and files.get("zeta", one.id) is None
        assert [f.id for f in files.list("acme")][:2] in ([two.id, one.id], [one.id, two.id])
        assert files.read("acme", two.id) == b"{}\n{}\n"
        assert files.delete("acme", one.id) and files.get("acme", one.id) is None
    finally:
        files.close()
