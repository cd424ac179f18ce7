"""OpenAI batches as runs of jobs: each batch is a one-step `inference` job of its tenant.

`POST /v1/batches` creates the job `openai-batch_ID` (manual trigger, label `openai-batch`)
whose step `batch` reads the uploaded input file, and triggers one run of it; the jobs engine
then does the rest (retries, checkpoint per line, resume after a plane restart, cancel). The
batch's status follows its run:

    validating (run pending) -> in_progress (running) -> finalizing (every line answered)
      -> completed (the run succeeded; output and error files written) | failed (the run failed)
    cancelling (cancel asked) -> cancelled;  past expires_at (24 h) -> cancelled as expired

The output file holds the rows whose request got a 2xx answer, the error file the others
(errors, non-2xx answers), both in input order; `request_counts` counts them as they come.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import trio

from runtime.gateway.errors import GatewayError
from runtime.jobs.batch_store import FINAL, BatchStore
from runtime.jobs.checkpoints import Checkpoints
from runtime.jobs.engine import JobEngine
from runtime.jobs.errors import IllegalTransition, JobError
from runtime.jobs.openai_files import BATCH_URLS, FileStore, input_urls
from runtime.jobs.schema import parse_job
from runtime.jobs.store import RunStore

log = logging.getLogger(__name__)
STEP = "batch"
WINDOW_S = 24 * 3600
DEFAULT_CONCURRENCY = 32
RECONCILE_S = 0.5
MAX_METADATA = 16
_STATUS_OF_RUN = {"pending": "validating", "running": "in_progress"}


def _not_found(batch_id: str) -> GatewayError:
    return GatewayError(404, f"no batch {batch_id[:100]!r}", "not_found", param="batch_id")


class BatchService:
    """Creates, reads, cancels and follows batches (see the module docstring)."""

    def __init__(self, engine: JobEngine, runs: RunStore, files: FileStore, checkpoints: Checkpoints,
                 store: BatchStore, *, concurrency: int = DEFAULT_CONCURRENCY, clock: Callable[[], float] = time.time):
        self.engine, self.runs, self.files, self.checkpoints, self.store = engine, runs, files, checkpoints, store
        self.concurrency, self.clock = concurrency, clock
        self._lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._stopping: set[str] = set()  # runs a cancel is under way for

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await trio.to_thread.run_sync(partial(fn, *args, **kwargs))

    async def create(self, tenant: str, body: dict[str, Any]) -> dict[str, Any]:
        """A new batch from `POST /v1/batches`' body; 400/404 naming what is wrong."""
        endpoint, window = body.get("endpoint"), body.get("completion_window")
        file_id, metadata = body.get("input_file_id"), body.get("metadata")
        if endpoint not in BATCH_URLS:
            raise GatewayError(400, f"endpoint must be one of {', '.join(BATCH_URLS)}", "invalid_value",
                               param="endpoint")
        if window != "24h":
            raise GatewayError(400, "completion_window must be \"24h\"", "invalid_value", param="completion_window")
        if metadata is not None and not (isinstance(metadata, dict) and len(metadata) <= MAX_METADATA and all(
                isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
                for k, v in metadata.items())):
            raise GatewayError(400, f"metadata must be at most {MAX_METADATA} string keys (64 chars) with string "
                               "values (512 chars)", "invalid_value", param="metadata")
        if not isinstance(file_id, str):
            raise GatewayError(400, "input_file_id is required", "invalid_value", param="input_file_id")
        record = await self._db(self.files.get, tenant, file_id)
        if record is None:
            raise GatewayError(404, f"no file {file_id[:100]!r}", "not_found", param="input_file_id")
        if record.purpose != "batch":
            raise GatewayError(400, f"file {file_id!r} has purpose {record.purpose!r}, not \"batch\"",
                               "invalid_value", param="input_file_id")
        data = await self._db(self.files.read, tenant, file_id)
        urls = await self._db(input_urls, data or b"")
        if urls != {endpoint}:
            other = sorted(urls - {endpoint})
            raise GatewayError(400, f"the input file's requests are for {', '.join(other)}, not this batch's "
                               f"endpoint {endpoint}", "invalid_value", param="endpoint")
        now = int(self.clock())
        batch_id = f"batch_{secrets.token_hex(12)}"
        batch = {"id": batch_id, "tenant": tenant, "endpoint": endpoint, "input_file_id": file_id,
                 "completion_window": window, "metadata": metadata, "run_id": None,
                 "job": f"openai-{batch_id}", "status": "validating", "total": record.lines, "completed": 0,
                 "failed": 0, "created_at": now, "expires_at": now + WINDOW_S}
        await self._db(self.store.insert, batch)
        async with self._lock:
            batch = await self._start(await self._db(self.store.get, batch_id))
        return public(batch)

    async def _start(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Apply the batch's job and trigger its run (adopting a run a crash left unrecorded)."""
        runs = await self._db(self.runs.runs, tenant=batch["tenant"], job_name=batch["job"], limit=1)
        if runs:
            run_id = runs[0].run_id
        else:
            doc = {"name": batch["job"], "description": f"OpenAI batch {batch['id']}",
                   "labels": {"openai-batch": batch["id"]}, "trigger": {"type": "manual"},
                   "policies": {"retries": {"max_attempts": 3, "backoff": "2s"}},
                   "steps": [{"name": STEP, "kind": "inference", "endpoint": batch["endpoint"],
                              "input": {"file": batch["input_file_id"]}, "concurrency": self.concurrency}]}
            await self.engine.apply(parse_job(doc, tenant=batch["tenant"]))
            run_id = await self.engine.trigger(batch["tenant"], batch["job"], cause="openai-batch")
        await self._db(self.store.update, batch["id"], run_id=run_id)
        return {**batch, "run_id": run_id}

    async def get(self, tenant: str, batch_id: str) -> dict[str, Any]:
        """The tenant's batch, brought up to date with its run; 404 when it has none of that id."""
        batch = await self._db(self.store.get, batch_id, tenant)
        if batch is None:
            raise _not_found(batch_id)
        return public(await self._reconcile(batch))

    async def list(self, tenant: str, *, after: str | None, limit: int) -> dict[str, Any]:
        """The tenant's batches, newest first, in OpenAI's cursor page shape."""
        batches = await self._db(self.store.list, tenant=tenant)
        if after is not None:
            ids = [b["id"] for b in batches]
            batches = batches[ids.index(after) + 1:] if after in ids else []
        page = [public(await self._reconcile(b)) for b in batches[:limit]]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": len(batches) > limit}

    async def cancel(self, tenant: str, batch_id: str) -> dict[str, Any]:
        """Ask a batch to stop: `cancelling` now, `cancelled` once its run has stopped; 409 when it ended."""
        batch = await self.get(tenant, batch_id)
        if batch["status"] in FINAL:
            raise GatewayError(409, f"batch {batch_id} is already {batch['status']}; only an unfinished batch "
                               "can be cancelled", "batch_not_cancellable")
        if batch["status"] != "cancelling":
            await self._db(self.store.update, batch_id, ending="cancel", status="cancelling",
                           cancelling_at=int(self.clock()))
            self._stop_run(await self._db(self.store.get, batch_id))
        return await self.get(tenant, batch_id)

    def _stop_run(self, batch: dict[str, Any]) -> None:
        run_id = batch.get("run_id")
        if self._nursery is not None and run_id and run_id not in self._stopping:
            self._stopping.add(run_id)
            self._nursery.start_soon(self._cancel_run, run_id)

    async def _cancel_run(self, run_id: str) -> None:
        try:
            await self.engine.cancel(run_id, reason="the batch was cancelled")
        except IllegalTransition:
            pass  # it ended meanwhile: the reconcile below records what it became
        except JobError:
            return  # not driven here yet (a plane just restarted, the lease not yet held): asked again next round
        finally:
            self._stopping.discard(run_id)
        await self.reconcile_all()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow unfinished batches (status, counts, expiry) until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                while True:
                    try:
                        await self.reconcile_all()
                    except Exception:  # one bad batch must not stop the others being followed
                        log.exception("batches: could not follow the open batches")
                    await trio.sleep(RECONCILE_S)
            finally:
                self._nursery = None

    async def reconcile_all(self) -> None:
        """Bring every unfinished batch up to date."""
        for batch in await self._db(self.store.list, open_only=True):
            await self._reconcile(batch)

    async def _reconcile(self, batch: dict[str, Any]) -> dict[str, Any]:
        if batch["status"] in FINAL:
            return batch
        async with self._lock:
            batch = await self._db(self.store.get, batch["id"]) or batch
            if batch["status"] in FINAL:
                return batch
            if batch["run_id"] is None:
                batch = await self._start(batch)
            changes = await self._changes(batch)
            await self._db(self.store.update, batch["id"], **changes)
            return {**batch, **changes}

    async def _changes(self, batch: dict[str, Any]) -> dict[str, Any]:
        now = int(self.clock())
        run = await self._db(self.runs.run, batch["run_id"])
        progress = await self._db(self.checkpoints.progress, batch["run_id"], STEP)
        changes: dict[str, Any] = {}
        if progress is not None:
            changes.update(completed=progress.done - progress.failed, failed=progress.failed)
            if progress.total is not None:
                changes["total"] = progress.total
        if run.state in _STATUS_OF_RUN:
            if batch["expires_at"] and now >= batch["expires_at"] and batch["ending"] is None:
                changes.update(ending="expire")
                self._stop_run({**batch, **changes})
            elif batch["ending"] is not None:  # asked to stop and still live: until a cancel takes, ask again
                self._stop_run(batch)
            status = _STATUS_OF_RUN[run.state]
            if status == "in_progress" and progress is not None and progress.total and progress.done >= progress.total:
                status = "finalizing"
            if batch["ending"] == "cancel":
                status = "cancelling"
            changes["status"] = status
            for name in ("in_progress", "finalizing"):
                if status == name and not batch[f"{name}_at"]:
                    changes[f"{name}_at"] = now
            return changes
        changes.update(await self._write_results(batch))
        if run.state == "succeeded":
            changes.update(status="completed", completed_at=now, finalizing_at=batch["finalizing_at"] or now)
        elif run.state == "cancelled" and batch["ending"] == "expire":
            changes.update(status="expired", expired_at=now)
        elif run.state == "cancelled":
            changes.update(status="cancelled", cancelled_at=now)
        else:
            changes.update(status="failed", failed_at=now, errors={"object": "list", "data": [
                {"code": "batch_failed", "message": run.reason or f"the batch's run {run.state}", "param": None,
                 "line": None}]})
        return changes

    async def _write_results(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The output file (2xx answers) and the error file (the rest), from the checkpointed rows."""
        def split() -> tuple[bytes, bytes]:
            rows = list(self.checkpoints.rows(batch["run_id"], STEP))
            return (b"".join(row.encode() + b"\n" for _, failed, row in rows if not failed),
                    b"".join(row.encode() + b"\n" for _, failed, row in rows if failed))

        good, bad = await self._db(split)
        out: dict[str, Any] = {"output_file_id": None, "error_file_id": None}
        for key, data, name in (("output_file_id", good, "output"), ("error_file_id", bad, "errors")):
            if data:
                record = await self._db(self.files.add_bytes, batch["tenant"], f"{batch['id']}_{name}.jsonl",
                                        "batch_output", data, lines=data.count(b"\n"))
                out[key] = record.id
        return out


def public(batch: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's batch object."""
    keys = ("id", "endpoint", "errors", "input_file_id", "completion_window", "status", "output_file_id",
            "error_file_id", "created_at", "in_progress_at", "expires_at", "finalizing_at", "completed_at",
            "failed_at", "expired_at", "cancelling_at", "cancelled_at", "metadata")
    out = {k: batch.get(k) for k in keys}
    out.update(object="batch", request_counts={"total": batch.get("total") or 0,
                                               "completed": batch.get("completed") or 0,
                                               "failed": batch.get("failed") or 0})
    return out
