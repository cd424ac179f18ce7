"""A batch cancelled while no engine drives its run yet (a plane just restarted, the job lease not
yet taken) still ends `cancelled` once an engine does, instead of staying `cancelling`."""

import json

import trio

from runtime.jobs.batch_store import BatchStore
from runtime.jobs.batches import BatchService
from runtime.jobs.checkpoints import Checkpoints
from runtime.jobs.dispatch import AttemptOrder, Outcome, Started
from runtime.jobs.engine import JobEngine
from runtime.jobs.lease import SoloLease
from runtime.jobs.openai_files import FileStore
from runtime.jobs.store import RunStore

from .conftest import inline


class Endless:
    """An inference step that answers nothing until it is cancelled (a long batch)."""

    def __init__(self) -> None:
        self.started = trio.Event()

    async def run_attempt(self, order: AttemptOrder, started: Started) -> Outcome:
        self.started.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def recover(self, order: AttemptOrder, started: Started) -> Outcome | None:
        return None


async def test_a_batch_cancelled_before_the_restarted_engine_drives_its_run_ends_cancelled(tmp_path):
    store, files = RunStore(tmp_path / "jobs.db"), FileStore(tmp_path / "openai")
    checkpoints, batches = Checkpoints(tmp_path / "inference.db"), BatchStore(tmp_path / "batches")
    executor = Endless()
    engine = JobEngine(store, executor, SoloLease(), offload=inline)
    service = BatchService(engine, store, files, checkpoints, batches)
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}}
    record = files.add_bytes("acme", "in.jsonl", "batch", json.dumps(line).encode() + b"\n", lines=1)
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(service.run)
                batch = await service.create("acme", {"input_file_id": record.id, "completion_window": "24h",
                                                      "endpoint": "/v1/chat/completions"})
                # As a plane stopped mid-batch leaves it: the run running, no engine driving it yet.
                run_id = batches.get(batch["id"])["run_id"]
                store.start_runs([(run_id, store.job("acme", f"openai-{batch['id']}"))], now=store.run(run_id).due_at)
                assert (await service.cancel("acme", batch["id"]))["status"] == "cancelling"
                await nursery.start(engine.run)  # the restarted plane's engine takes the lease, resumes the run
                while (b := await service.get("acme", batch["id"]))["status"] != "cancelled":  # noqa: ASYNC110 - its store
                    await trio.sleep(0.05)
                assert b["cancelled_at"] and store.run(run_id).state == "cancelled"
                nursery.cancel_scope.cancel()
    finally:
        for closing in (store, files, checkpoints, batches):
            closing.close()
