"""The executor of `inference` steps: a JSONL of OpenAI requests sent through the dispatcher.

It runs in the plane, beside the gateway, and sends every line through the gateway's own
`Dispatcher` as the run's tenant (key id "jobs", the tenant's limits), so the tenant's rpm, tpm
and concurrency limits are the same ones its HTTP traffic meets: a line refused with 429 waits
and is sent again, for at most `LIMIT_WAIT_S`. At most the step's `concurrency` lines are in
flight. Each line is an OpenAI request body (or a Batch API line, `{custom_id, method, url,
body}`); the step's `model` fills lines that name none. Every answer becomes one row of the
OpenAI batch output shape, `{"id", "custom_id", "response": {"status_code", "request_id",
"body"}, "error"}`; a line that cannot be sent is a row with `error` set, never a failed step.
Rows are checkpointed (runtime/jobs/checkpoints.py), so a retried attempt, or one re-attached
after a plane restart, sends only the lines not yet answered. When every line is answered the
rows, in input order, become the step's artifact `output.jsonl` (runtime/jobs/artifacts.py), which
`flowctl jobs artifacts RUN` downloads and a later step reads as `input = { artifact = "STEP:output.jsonl" }`.
Cancellation: cancelling the attempt cancels the calls in flight (the dispatcher resets their
tunnel streams); rows already answered stay checkpointed.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from runtime.dispatch.limits import Principal
from runtime.exception_groups import collapse
from runtime.gateway.errors import GatewayError
from runtime.jobs.artifacts import Artifact, ArtifactStore
from runtime.jobs.checkpoints import Checkpoints
from runtime.jobs.dispatch import AttemptOrder, Outcome, Started
from runtime.jobs.errors import JobError
from runtime.jobs.lease import EpochFence
from runtime.jobs.model import InferenceStep
from runtime.tunnel.errors import TunnelError

if TYPE_CHECKING:
    from runtime.dispatch.dispatcher import Dispatcher
    from runtime.jobs.openai_files import FileStore

log = logging.getLogger(__name__)
OUTPUT_FILE = "output.jsonl"
NODE = "plane"
LIMIT_WAIT_S = 600.0  # how long one line waits out 429s (and 503s) before it becomes an error row
FLUSH_S = 0.05  # no longer waited: rows are written as they come (kept for callers that pass it)
FLUSH_ROWS = 128
MAX_INPUT_BYTES = 200 << 20
PrincipalOf = Callable[[str], Awaitable[Principal]]


class InputError(JobError):
    """The step's input could not be read (a missing file or artifact): the attempt fails."""


@dataclass(frozen=True)
class Request:
    """One input line, ready to send."""

    custom_id: str
    model: str
    body: bytes


def request_id() -> str:
    """A fresh id for a row or a request."""
    return secrets.token_hex(12)


def error_row(custom_id: str | None, code: str, message: str) -> dict[str, Any]:
    """A row for a line that got no answer."""
    return {"id": f"batch_req_{request_id()}", "custom_id": custom_id, "response": None,
            "error": {"code": code, "message": message}}


def prepare(number: int, raw: str, step: InferenceStep) -> Request | dict[str, Any]:
    """Input line `number` (from 0) as a request, or the error row saying what is wrong with it."""
    where = f"line {number + 1}"
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        return error_row(None, "invalid_json", f"{where}: not valid JSON ({exc})")
    if not isinstance(doc, dict):
        return error_row(None, "invalid_request", f"{where}: expected a JSON object")
    custom_id = doc.get("custom_id")
    if "body" in doc and "url" in doc:  # a Batch API line
        if doc.get("url") != step.endpoint:
            return error_row(custom_id, "invalid_url", f"{where}: url {doc.get('url')!r} is not this batch's "
                                                       f"endpoint {step.endpoint}")
        if doc.get("method", "POST") != "POST":
            return error_row(custom_id, "invalid_method", f"{where}: method must be POST")
        body = doc["body"]
        if not isinstance(body, dict):
            return error_row(custom_id, "invalid_request", f"{where}: body must be a JSON object")
        body = dict(body)
    else:
        body = {k: v for k, v in doc.items() if k != "custom_id"}
    if not isinstance(custom_id, str):
        custom_id = f"line-{number + 1}"
    model = body.get("model") or step.model
    if not isinstance(model, str) or not model:
        return error_row(custom_id, "missing_model", f"{where}: no model (give the line a model, or the step one)")
    if body.get("stream"):
        return error_row(custom_id, "invalid_request", f"{where}: stream is not supported in a batch")
    body["model"] = model
    return Request(custom_id, model, json.dumps(body).encode())


class InferenceExecutor:
    """Runs inference steps in the plane through the gateway's dispatcher (see the module docstring)."""

    def __init__(self, dispatcher: Dispatcher | None, principal_of: PrincipalOf, checkpoints: Checkpoints,
                 artifacts: ArtifactStore, files: FileStore | None = None, *, limit_wait_s: float = LIMIT_WAIT_S,
                 flush_s: float = FLUSH_S):
        self.dispatcher, self.principal_of = dispatcher, principal_of
        self.checkpoints, self.artifacts, self.files = checkpoints, artifacts, files
        self.limit_wait_s, self.flush_s = limit_wait_s, flush_s
        self.fence = EpochFence()

    async def run_attempt(self, order: AttemptOrder, started: Started) -> Outcome:
        """Answer every line not yet answered, then write the output file."""
        self.fence.check(order.epoch)
        step = order.step
        if not isinstance(step, InferenceStep):
            raise JobError(f"step {step.name!r} is not an inference step")
        await started(NODE)
        if self.dispatcher is None:
            return Outcome("failed", reason="inference steps need the gateway role in this plane", node=NODE)
        try:
            lines = await self._input(order, step)
        except InputError as exc:
            return Outcome("failed", reason=str(exc), node=NODE)
        run_id = order.run_id
        await trio.to_thread.run_sync(self.checkpoints.set_total, run_id, step.name, len(lines))
        done = await trio.to_thread.run_sync(self.checkpoints.done_lines, run_id, step.name)
        todo = [n for n in range(len(lines)) if n not in done]
        who = await self.principal_of(order.tenant)
        await self._answer(order, step, who, lines, todo)
        count, failed = await trio.to_thread.run_sync(self._write_output, run_id, step.name, order.attempt)
        return Outcome("succeeded", node=NODE, reason=f"{count} lines: {count - failed} succeeded, {failed} failed")

    def _write_output(self, run_id: str, step: str, attempt: int) -> tuple[int, int]:
        """The answered rows, in input order, as the step's output.jsonl: (rows, failed rows)."""
        rows = list(self.checkpoints.rows(run_id, step))
        data = b"".join(row.encode() + b"\n" for _, _, row in rows)
        self.artifacts.put_bytes(run_id, step, attempt, OUTPUT_FILE, data)
        return len(rows), sum(1 for _, bad, _ in rows if bad)

    async def recover(self, order: AttemptOrder, started: Started) -> Outcome | None:
        """An attempt a previous plane left: it ran in that process, so resume it from its checkpoint."""
        return await self.run_attempt(order, started)

    async def _input(self, order: AttemptOrder, step: InferenceStep) -> list[str]:
        source = step.input
        if source.inline:
            return list(source.inline)
        if source.file is not None:
            if self.files is None:
                raise InputError("uploaded files need the gateway role in this plane")
            data = await trio.to_thread.run_sync(self.files.read, order.tenant, source.file)
            if data is None:
                raise InputError(f"input file {source.file!r} not found")
        else:
            spec = source.artifact or ""
            name, _, path = spec.partition(":")
            found = await trio.to_thread.run_sync(self.artifacts.find, order.run_id, name, path)
            if found is None:
                raise InputError(f"input artifact {spec!r} not found (step {name!r} of this run left no {path!r})")
            if found.size > MAX_INPUT_BYTES:
                raise InputError(f"input artifact {spec!r} is larger than {MAX_INPUT_BYTES} bytes")
            data = await trio.to_thread.run_sync(self._read_artifact, found)
        text = data.decode("utf-8", errors="replace")
        return [line for line in text.splitlines() if line.strip()]

    def _read_artifact(self, artifact: Artifact) -> bytes:
        with self.artifacts.open(artifact) as f:
            return f.read()

    async def _answer(self, order: AttemptOrder, step: InferenceStep, who: Principal, lines: list[str],
                      todo: list[int]) -> None:
        if not todo:
            return
        work_send, work_recv = trio.open_memory_channel[int](len(todo))
        for n in todo:
            work_send.send_nowait(n)
        work_send.close()
        rows_send, rows_recv = trio.open_memory_channel[tuple[int, bool, str]](step.concurrency * 2)

        async def worker(rows: trio.MemorySendChannel[tuple[int, bool, str]]) -> None:
            async with rows:
                async for n in work_recv:
                    row = await self._line(who, step, n, lines[n])
                    bad = row["error"] is not None or row["response"]["status_code"] >= 400
                    await rows.send((n, bad, json.dumps(row)))

        with collapse():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, order.run_id, step.name, rows_recv)
                # No more workers than the tenant may have requests in flight: the rest would only
                # wait out 429s (its own HTTP traffic shares the slots, so those stay possible).
                cap = who.tenant_limits.max_concurrency or step.concurrency
                async with rows_send:
                    for _ in range(min(step.concurrency, cap, len(todo))):
                        nursery.start_soon(worker, rows_send.clone())

    async def _writer(self, run_id: str, step: str, rows: trio.MemoryReceiveChannel[tuple[int, bool, str]]) -> None:
        """Checkpoint each answered row at once, with the rows already queued behind it (one commit,
        on the loop: a thread trip would leave answered rows unwritten for tens of ms on a loaded
        machine). A plane killed with SIGKILL then redoes only the lines still in flight."""
        async with rows:
            try:
                async for first in rows:
                    batch = [first, *_queued(rows, FLUSH_ROWS - 1)]
                    self.checkpoints.add(run_id, step, batch)
            finally:  # cancelled: what the workers already handed over is written too
                if left := _queued(rows, 1 << 30):
                    self.checkpoints.add(run_id, step, left)

    async def _line(self, who: Principal, step: InferenceStep, number: int, raw: str) -> dict[str, Any]:
        prepared = prepare(number, raw, step)
        if isinstance(prepared, dict):
            return prepared
        status, rid, body = await self._send(who, step.endpoint, prepared)
        return {"id": f"batch_req_{request_id()}", "custom_id": prepared.custom_id,
                "response": {"status_code": status, "request_id": rid, "body": body}, "error": None}

    async def _send(self, who: Principal, endpoint: str, request: Request) -> tuple[int, str, Any]:
        """One request through the dispatcher: (status, request id, JSON body); 429/503 waited out."""
        dispatcher = self.dispatcher
        assert dispatcher is not None
        deadline = trio.current_time() + self.limit_wait_s
        while True:
            try:
                async with dispatcher.slot(who):
                    call = await dispatcher.send(who, request.model, endpoint, request.body,
                                                 headers=[("content-type", "application/json")], via="job")
                    async with call:
                        raw = await call.read()
                        status = call.status
                        rid = dict((k.lower(), v) for k, v in call.headers).get("x-request-id") or f"req_{request_id()}"
                break
            except GatewayError as exc:
                retry = exc.status == 429 or (exc.status == 503 and exc.code in ("no_ready_replica", "limiter_unavailable"))
                if not retry or trio.current_time() >= deadline:
                    return exc.status, f"req_{request_id()}", json.loads(exc.body())
                # A free concurrency slot comes back within a request's time; a rate waits its turn.
                await trio.sleep(0.02 if exc.code == "concurrency_limit_exceeded" else exc.retry_after or 1.0)
            except TunnelError as exc:
                error = GatewayError(502, f"the replica failed mid-reply ({exc})", "upstream_error")
                return 502, f"req_{request_id()}", json.loads(error.body())
        try:
            return status, rid, json.loads(raw)
        except ValueError:
            return status, rid, raw.decode("utf-8", errors="replace")


def _queued(rows: trio.MemoryReceiveChannel[tuple[int, bool, str]], most: int) -> list[tuple[int, bool, str]]:
    """Up to `most` rows already waiting in the channel, without waiting."""
    out: list[tuple[int, bool, str]] = []
    while len(out) < most:
        try:
            out.append(rows.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            break
    return out
