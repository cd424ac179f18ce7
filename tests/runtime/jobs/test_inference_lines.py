"""Inference lines and batch input files checked one by one; the executor's failures that need no model."""

import json

import pytest
import trio
import trio.testing

from runtime.jobs.artifacts import ArtifactStore
from runtime.jobs.checkpoints import Checkpoints
from runtime.jobs.dispatch import AttemptOrder
from runtime.jobs.errors import JobError
from runtime.jobs.executors import ByKindExecutor
from runtime.jobs.inference import InferenceExecutor, Request, prepare
from runtime.jobs.model import InferenceInput, InferenceStep
from runtime.jobs.openai_files import BatchInputError, FileStore, validate_batch_input
from runtime.jobs.store import RunStore

STEP = InferenceStep("ask", "/v1/chat/completions", InferenceInput(inline=("{}",)), model="echo")
MESSAGES = [{"role": "user", "content": "hi"}]


def test_a_plain_body_gets_the_steps_model_and_a_line_custom_id():
    request = prepare(2, json.dumps({"messages": MESSAGES}), STEP)
    assert isinstance(request, Request) and request.custom_id == "line-3" and request.model == "echo"
    assert json.loads(request.body) == {"messages": MESSAGES, "model": "echo"}


def test_a_batch_line_keeps_its_custom_id_and_model_and_sends_only_its_body():
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "other", "messages": MESSAGES}}
    request = prepare(0, json.dumps(line), STEP)
    assert isinstance(request, Request) and (request.custom_id, request.model) == ("a", "other")
    assert json.loads(request.body) == line["body"]


@pytest.mark.parametrize(("raw", "code", "message"), [
    ("{nope", "invalid_json", "line 1: not valid JSON"),
    ("[1, 2]", "invalid_request", "line 1: expected a JSON object"),
    (json.dumps({"messages": MESSAGES, "stream": True}), "invalid_request", "stream is not supported"),
    (json.dumps({"custom_id": "x", "url": "/v1/embeddings", "body": {}}), "invalid_url", "is not this batch's"),
    (json.dumps({"custom_id": "x", "method": "GET", "url": "/v1/chat/completions", "body": {}}),
     "invalid_method", "method must be POST"),
])
def test_a_bad_line_is_an_error_row_naming_it(raw, code, message):
    row = prepare(0, raw, STEP)
    assert isinstance(row, dict) and row["response"] is None and row["error"]["code"] == code
    assert message in row["error"]["message"]


def test_a_line_without_a_model_is_an_error_row_when_the_step_has_none():
    step = InferenceStep("ask", "/v1/chat/completions", InferenceInput(inline=("{}",)))
    row = prepare(4, json.dumps({"custom_id": "c", "messages": MESSAGES}), step)
    assert isinstance(row, dict) and row["custom_id"] == "c" and "line 5: no model" in row["error"]["message"]


def _line(custom_id="a", **changes):
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings",
                       "body": {"model": "m", "input": "x"}, **changes})


@pytest.mark.parametrize(("text", "message"), [
    ("", "the file has no requests"),
    (_line() + "\n" + _line(), "line 2: custom_id 'a' is a duplicate of line 1"),
    (_line(url="/v1/images"), "line 1: url must be one of"),
    (_line(body=[1]), "line 1: body must be a JSON object"),
    (_line(custom_id=""), "line 1: custom_id must be a non-empty string"),
    ("\n" + _line() + "\n{", "line 3: not valid JSON"),
])
def test_batch_input_files_are_checked_line_by_line(text, message):
    with pytest.raises(BatchInputError, match=message):
        validate_batch_input(text.encode())


def test_a_batch_input_file_counts_its_requests_and_refuses_non_utf8():
    assert validate_batch_input((_line("a") + "\n\n" + _line("b") + "\n").encode()) == 2
    with pytest.raises(BatchInputError, match="not UTF-8"):
        validate_batch_input(b"\xff\xfe")


def test_files_belong_to_their_tenant(tmp_path):
    files = FileStore(tmp_path)
    try:
        record = files.add_bytes("acme", "in.jsonl", "batch", b"data\n", lines=1)
        assert files.read("acme", record.id) == b"data\n"
        assert files.get("globex", record.id) is None and files.read("globex", record.id) is None
        assert not files.delete("globex", record.id) and files.delete("acme", record.id)
        assert files.list("acme") == []
    finally:
        files.close()


@pytest.fixture
def parts(tmp_path):
    checkpoints, files = Checkpoints(tmp_path / "inference.db"), FileStore(tmp_path / "openai")
    runs = RunStore(tmp_path / "jobs.db")  # artifact rows live beside the runs' attempts
    artifacts = ArtifactStore.for_plane(tmp_path)
    yield checkpoints, files, artifacts
    runs.close()
    checkpoints.close()
    files.close()
    artifacts.close()


def _order(step, attempt=1):
    return AttemptOrder("run_1", "acme", "job", step, attempt, epoch=1)


async def _never_called(tenant):
    raise AssertionError("no principal needed")


async def _started(node):
    pass


async def test_without_the_gateway_an_inference_attempt_fails_saying_so(parts):
    checkpoints, files, artifacts = parts
    executor = InferenceExecutor(None, _never_called, checkpoints, artifacts, files)
    outcome = await executor.run_attempt(_order(STEP), _started)
    assert (outcome.state, outcome.reason) == ("failed", "inference steps need the gateway role in this plane")


async def test_a_missing_input_file_or_artifact_fails_the_attempt_naming_it(parts):
    checkpoints, files, artifacts = parts
    executor = InferenceExecutor(object(), _never_called, checkpoints, artifacts, files)  # type: ignore[arg-type]
    step = InferenceStep("ask", "/v1/embeddings", InferenceInput(file="file-nope"), model="m")
    outcome = await executor.run_attempt(_order(step), _started)
    assert (outcome.state, outcome.reason) == ("failed", "input file 'file-nope' not found")
    step = InferenceStep("ask", "/v1/embeddings", InferenceInput(artifact="corpus:corpus.jsonl"), model="m")
    outcome = await executor.run_attempt(_order(step), _started)
    assert outcome.state == "failed" and "input artifact 'corpus:corpus.jsonl' not found" in outcome.reason


async def test_a_step_kind_with_no_executor_here_fails_the_attempt():
    with pytest.raises(JobError, match="inference steps cannot run in this plane"):
        await ByKindExecutor({}).run_attempt(_order(STEP), _started)


def test_checkpoints_count_progress_and_keep_rows_in_input_order(tmp_path):
    checkpoints = Checkpoints(tmp_path / "c.db")
    try:
        assert checkpoints.progress("r", "s") is None
        checkpoints.set_total("r", "s", 3)
        checkpoints.add("r", "s", [(2, False, "two"), (0, True, "zero")])
        progress = checkpoints.progress("r", "s")
        assert (progress.done, progress.failed, progress.total) == (2, 1, 3)
        assert checkpoints.done_lines("r", "s") == {0, 2}
        assert [row for _, _, row in checkpoints.rows("r", "s")] == ["zero", "two"]
    finally:
        checkpoints.close()


async def test_an_answered_row_is_checkpointed_before_time_moves_on(parts, autojump_clock):
    """What a SIGKILL may lose is only the lines still in flight: each row the workers hand over is
    committed in the same instant, not after a flush interval."""
    checkpoints, files, artifacts = parts
    executor = InferenceExecutor(object(), _never_called, checkpoints, artifacts, files)  # type: ignore[arg-type]
    send, receive = trio.open_memory_channel(8)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(executor._writer, "run_1", "ask", receive)
        began = trio.current_time()
        for n in range(3):
            await send.send((n, False, json.dumps({"line": n})))
            await trio.testing.wait_all_tasks_blocked()
            assert checkpoints.done_lines("run_1", "ask") == set(range(n + 1))
        assert trio.current_time() == began
        for n in range(3, 6):  # queued together: written together, still at once
            send.send_nowait((n, n == 5, json.dumps({"line": n})))
        await trio.testing.wait_all_tasks_blocked()
        assert checkpoints.done_lines("run_1", "ask") == set(range(6)) and trio.current_time() == began
        await send.aclose()
    assert [failed for _, failed, _ in checkpoints.rows("run_1", "ask")] == [False] * 5 + [True]
