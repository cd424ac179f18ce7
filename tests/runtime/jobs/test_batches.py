"""The OpenAI Batch API on a real plane, driven by the official `openai` package (unmodified).

A batch is a run of a one-step inference job: lines go through the gateway's dispatcher to the
real echo worker; files and batches belong to the key's tenant; a plane restarted mid-batch
resumes from its per-line checkpoint.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
from functools import partial

import httpx
import openai
import pytest
import schemathesis
import trio
from hypothesis import HealthCheck, given, settings

from runtime.jobs.batch_api import is_batch_path
from tests.runtime.gateway.conftest import ADMIN, ADMIN_AUTH
from tests.runtime.jobs.batch_cluster import start_batch_cluster

FINAL = ("completed", "failed", "cancelled", "expired")


def chat_line(i: int, model: str = "echo", **extra) -> dict:
    return {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"hello {i}"}], **extra}}


def jsonl(lines: list[dict]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


@pytest.fixture
async def plane(nursery, tmp_path, request):
    extra = getattr(request, "param", None) or {}
    cluster, worker = await start_batch_cluster(nursery, tmp_path, extra)
    try:
        yield cluster
    finally:
        with trio.CancelScope(shield=True):
            await cluster.client.aclose()
            await trio.to_thread.run_sync(worker.stop)


def _client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=20)


def _wait_batch(client: openai.OpenAI, batch_id: str, statuses=FINAL, timeout: float = 30.0):
    import time

    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.05)


def _full_batch(url: str, key: str, data: bytes):
    client = _client(url, key)
    try:
        uploaded = client.files.create(file=("requests.jsonl", io.BytesIO(data)), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                      completion_window="24h", metadata={"purpose": "test"})
        created_status = batch.status
        done = _wait_batch(client, batch.id)
        output = client.files.content(done.output_file_id).text if done.output_file_id else ""
        errors = client.files.content(done.error_file_id).text if done.error_file_id else ""
        listed = [b.id for b in client.batches.list(limit=10)]
        files = [f.id for f in client.files.list()]
        return uploaded, created_status, done, output, errors, listed, files
    finally:
        client.close()


async def test_the_openai_package_runs_a_batch_through_the_gateway(plane):
    key = await plane.key()
    lines = [chat_line(i) for i in range(12)] + [chat_line(99, model="not-deployed")]
    with trio.fail_after(60):
        uploaded, created, batch, output, errors, listed, files = await trio.to_thread.run_sync(
            partial(_full_batch, plane.url, key, jsonl(lines)))
    assert uploaded.purpose == "batch" and uploaded.bytes == len(jsonl(lines))
    assert created in ("validating", "in_progress", "finalizing", "completed")
    assert batch.status == "completed" and batch.metadata == {"purpose": "test"}
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (13, 12, 1)
    assert batch.completed_at >= batch.in_progress_at >= batch.created_at
    rows = [json.loads(line) for line in output.splitlines()]
    assert [r["custom_id"] for r in rows] == [f"req-{i}" for i in range(12)]  # input order
    assert all(r["response"]["status_code"] == 200 and r["error"] is None for r in rows)
    assert rows[3]["response"]["body"]["choices"][0]["message"]["content"] == "hello 3"
    [bad] = [json.loads(line) for line in errors.splitlines()]
    assert bad["custom_id"] == "req-99" and bad["response"]["status_code"] == 404
    assert bad["response"]["body"]["error"]["code"] == "model_not_found"
    assert listed == [batch.id]
    assert {uploaded.id, batch.output_file_id, batch.error_file_id} <= set(files)
    # The batch is a run of a job of the tenant, with its progress on the step.
    run = await _batch_run(plane, batch.id)
    assert run["state"] == "succeeded"
    assert run["steps"][0]["progress"] == {"done": 13, "failed": 1, "total": 13}


async def _batch_run(plane, batch_id: str) -> dict:
    runs = (await plane.client.get(f"/api/v1/runs?tenant=acme&job=openai-{batch_id}", headers=ADMIN_AUTH)).json()
    [run] = runs["runs"]
    return (await plane.client.get(f"/api/v1/runs/{run['run_id']}", headers=ADMIN_AUTH)).json()


async def finished(http: httpx.AsyncClient, auth: dict, batch_id: str) -> dict:
    """The batch once it has ended (within 60 s)."""
    with trio.fail_after(60):
        while (b := (await http.get(f"/v1/batches/{batch_id}", headers=auth)).json())["status"] not in FINAL:  # noqa: ASYNC110
            await trio.sleep(0.1)
    return b


async def _upload(http: httpx.AsyncClient, key: str, data: bytes, purpose: str = "batch") -> httpx.Response:
    return await http.post("/v1/files", headers={"Authorization": f"Bearer {key}"},
                           files={"file": ("in.jsonl", data)}, data={"purpose": purpose})


@pytest.mark.parametrize("plane", [{"batches": {"max_file_bytes": 4096}}], indirect=True)
async def test_bad_uploads_are_refused_naming_the_line(plane):
    key = await plane.key()
    http = plane.client
    cases = [
        (jsonl([chat_line(1)]) + b"{not json\n", 400, "line 2: not valid JSON"),
        (jsonl([chat_line(1), chat_line(1)]), 400, "line 2: custom_id 'req-1' is a duplicate of line 1"),
        (jsonl([{**chat_line(1), "url": "/v1/images/generations"}]), 400, "line 1: url must be one of"),
        (jsonl([{**chat_line(1), "method": "GET"}]), 400, "line 1: method must be"),
        (jsonl([chat_line(i) for i in range(100)]), 413, "larger than 4096 bytes"),
    ]
    for data, status, message in cases:
        r = await _upload(http, key, data)
        assert r.status_code == status, r.text
        assert message in r.json()["error"]["message"], r.text
    r = await _upload(http, key, jsonl([chat_line(1)]), purpose="fine-tune")
    assert r.status_code == 400 and "purpose" in r.json()["error"]["message"]
    listed = (await http.get("/v1/files", headers={"Authorization": f"Bearer {key}"})).json()
    assert listed["data"] == []  # nothing half-stored


async def test_files_and_batches_are_the_tenants_own(plane):
    key, other = await plane.key("acme"), await plane.key("globex")
    mine = (await _upload(plane.client, key, jsonl([chat_line(1)]))).json()
    theirs = {"Authorization": f"Bearer {other}"}
    for path in (f"/v1/files/{mine['id']}", f"/v1/files/{mine['id']}/content"):
        r = await plane.client.get(path, headers=theirs)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await plane.client.post("/v1/batches", headers=theirs, json={
        "input_file_id": mine["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"})
    assert r.status_code == 404 and "no file" in r.json()["error"]["message"]
    r = await plane.client.post("/v1/batches", headers={"Authorization": f"Bearer {key}"}, json={
        "input_file_id": "file-nope", "endpoint": "/v1/chat/completions", "completion_window": "24h"})
    assert r.status_code == 404
    r = await plane.client.post("/v1/batches", headers={"Authorization": f"Bearer {key}"}, json={
        "input_file_id": mine["id"], "endpoint": "/v1/embeddings", "completion_window": "24h"})
    assert r.status_code == 400 and "/v1/chat/completions" in r.json()["error"]["message"]
    r = await plane.client.post("/v1/batches", headers={"Authorization": f"Bearer {key}"}, json={
        "input_file_id": mine["id"], "endpoint": "/v1/chat/completions", "completion_window": "1h"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "completion_window"
    r = await plane.client.delete(f"/v1/files/{mine['id']}", headers=theirs)
    assert r.status_code == 404
    r = await plane.client.get("/v1/batches/batch_nope", headers=theirs)
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
    r = await plane.client.get("/v1/files", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401


def _cancel_slow_batch(url: str, key: str, data: bytes):
    import time

    client = _client(url, key)
    try:
        uploaded = client.files.create(file=("slow.jsonl", io.BytesIO(data)), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
        _wait_batch(client, batch.id, statuses=("in_progress",))
        began = time.monotonic()
        cancelling = client.batches.cancel(batch.id)
        cancelled = _wait_batch(client, batch.id)
        took = time.monotonic() - began
        try:
            client.batches.cancel(batch.id)
            again = None
        except openai.ConflictError as exc:
            again = exc.status_code
        return cancelling.status, cancelled, took, again
    finally:
        client.close()


async def test_cancel_stops_calls_in_flight_and_a_finished_batch_cannot_be_cancelled(plane):
    key = await plane.key()
    # Each answer takes 10 s (5 tokens, 2 s each): cancelling must not wait for them.
    lines = [chat_line(i, echo_delay_s=2.0) for i in range(4)]
    for line in lines:
        line["body"]["messages"][0]["content"] = "one two three four five"
    with trio.fail_after(60):
        cancelling, cancelled, took, again = await trio.to_thread.run_sync(
            partial(_cancel_slow_batch, plane.url, key, jsonl(lines)))
    assert cancelling in ("cancelling", "cancelled")
    assert cancelled.status == "cancelled" and cancelled.cancelled_at and took < 5
    assert cancelled.request_counts.completed == 0
    assert again == 409
    run = await _batch_run(plane, cancelled.id)
    assert run["state"] == "cancelled"


@pytest.mark.parametrize("plane", [{"batches": {"concurrency": 2}}], indirect=True)
async def test_a_plane_restarted_mid_batch_resumes_without_redoing_answered_lines(plane):
    key = await plane.key()
    http, auth = plane.client, {"Authorization": f"Bearer {key}"}
    lines = [chat_line(i, echo_delay_s=0.15) for i in range(24)]
    file_id = (await _upload(http, key, jsonl(lines))).json()["id"]
    batch = (await http.post("/v1/batches", headers=auth, json={
        "input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"})).json()
    db = plane.data / "plane" / "jobs" / "inference.db"

    def answered() -> dict[int, str]:
        with sqlite3.connect(db) as conn:
            return {n: json.loads(row)["id"] for n, row in conn.execute("SELECT line, row FROM lines")}

    with trio.fail_after(30):
        while len(await trio.to_thread.run_sync(answered)) < 6:  # noqa: ASYNC110 - the plane's database
            await trio.sleep(0.05)
    await plane.stop()
    before = await trio.to_thread.run_sync(answered)  # what the stopped plane had checkpointed
    assert 6 <= len(before) < 24
    await plane.start()
    await plane.ready()
    b = await finished(http, auth, batch["id"])
    assert b["status"] == "completed" and b["request_counts"] == {"total": 24, "completed": 24, "failed": 0}
    output = (await http.get(f"/v1/files/{b['output_file_id']}/content", headers=auth)).text
    rows = [json.loads(line) for line in output.splitlines()]
    assert [r["custom_id"] for r in rows] == [f"req-{i}" for i in range(24)]
    assert all(rows[n]["id"] == row_id for n, row_id in before.items())  # answered once, kept
    run = await _batch_run(plane, b["id"])
    assert [a["attempt"] for a in run["steps"][0]["attempts"]] == [1]  # the same attempt, re-attached


async def test_the_tenants_rate_limit_paces_a_batch(plane):
    """rpm 60 (a burst of 6, then one a second): 8 lines take about 2 s, none is refused."""
    key = await plane.key("slow", rpm=60)
    http, auth = plane.client, {"Authorization": f"Bearer {key}"}
    file_id = (await _upload(http, key, jsonl([chat_line(i) for i in range(8)]))).json()["id"]
    began = trio.current_time()
    batch = (await http.post("/v1/batches", headers=auth, json={
        "input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"})).json()
    b = await finished(http, auth, batch["id"])
    assert b["request_counts"] == {"total": 8, "completed": 8, "failed": 0}
    assert trio.current_time() - began >= 1.5


async def test_an_inference_job_answers_inline_lines_in_order_and_a_later_step_reads_its_artifact(plane):
    await plane.key("acme")
    lines = [{"custom_id": f"q{i}", "messages": [{"role": "user", "content": f"q {i}"}]} for i in range(3)]
    lines += [{"messages": [{"role": "user", "content": "streamed"}], "stream": True},  # an error row
              {"model": "not-deployed", "messages": [{"role": "user", "content": "x"}]}]  # a 404 row
    job = {"name": "ask-then-embed", "trigger": {"type": "manual"}, "steps": [
        {"name": "ask", "kind": "inference", "endpoint": "/v1/chat/completions", "model": "echo",
         "input": {"inline": lines}, "concurrency": 2},
        {"name": "embed", "kind": "inference", "needs": ["ask"], "endpoint": "/v1/embeddings", "model": "echo",
         "input": {"artifact": "ask:output.jsonl"}}]}
    r = await plane.client.post("/api/v1/jobs?tenant=acme", headers=ADMIN_AUTH, json=job)
    assert r.status_code in (200, 201), r.text
    r = await plane.client.post("/api/v1/jobs/ask-then-embed/trigger?tenant=acme", headers=ADMIN_AUTH, json={})
    run_id = r.json()["run_id"]
    with trio.fail_after(30):
        while (run := (await plane.client.get(f"/api/v1/runs/{run_id}", headers=ADMIN_AUTH)).json())[  # noqa: ASYNC110
                "state"] in ("pending", "running"):
            await trio.sleep(0.05)
    assert run["state"] == "succeeded", run
    ask, embed = run["steps"]
    assert ask["progress"] == {"done": 5, "failed": 2, "total": 5}
    assert ask["attempts"][0]["reason"] == "5 lines: 3 succeeded, 2 failed" and ask["attempts"][0]["node"] == "plane"
    assert embed["progress"]["total"] == 5  # it read ask's output.jsonl, one line per row
    artifacts = plane.handle.jobs.artifacts
    found = artifacts.find(run_id, "ask", "output.jsonl")
    with artifacts.open(found) as f:
        rows = [json.loads(line) for line in f.read().splitlines()]
    assert [r["custom_id"] for r in rows] == ["q0", "q1", "q2", "line-4", "line-5"]
    assert rows[1]["response"]["body"]["choices"][0]["message"]["content"] == "q 1"
    assert rows[3]["response"] is None and "stream" in rows[3]["error"]["message"]
    assert rows[4]["response"]["status_code"] == 404
    # The CLI shows the latest run's steps with their lines.
    env = {**os.environ, "FLOWCTL_SERVER": plane.url, "FLOWCTL_TOKEN": ADMIN, "FLOWCTL_CONFIG": "/nonexistent"}
    with trio.fail_after(60):
        shown = await trio.run_process([sys.executable, "-m", "flowctl", "jobs", "show", "ask-then-embed", "--tenant",
                                        "acme"], capture_stdout=True, check=True, env=env, stdin=subprocess.DEVNULL)
    assert "step     ask  succeeded, 5/5 lines, 2 failed" in shown.stdout.decode()


def _fuzz_batches(base_url: str, key: str, document: dict) -> list[int]:
    schema = schemathesis.from_dict(document, base_url=base_url)
    seen: list[int] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if not is_batch_path(operation.path):
            continue

        @settings(max_examples=15, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case):
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {key}"}
            response = case.call(timeout=20)
            seen.append(response.status_code)
            assert response.status_code < 500, response.text
            if response.status_code >= 400:
                error = response.json()["error"]
                assert error["message"] and error["type"] and "code" in error

        check()
    return seen


async def test_fuzz_the_batch_api_against_its_openapi(plane):
    """Generated requests (bad ids, bad bodies, odd multipart forms): no 5xx, every error OpenAI-shaped."""
    key = await plane.key()
    document = (await plane.client.get("/v1/openapi.json")).json()
    with trio.fail_after(240):
        seen = await trio.to_thread.run_sync(partial(_fuzz_batches, plane.url, key, document))
    assert 200 in seen and 404 in seen and 400 in seen


async def test_a_batch_past_its_completion_window_expires_keeping_what_was_answered(plane):
    key = await plane.key()
    http, auth = plane.client, {"Authorization": f"Bearer {key}"}
    lines = [chat_line(0)] + [chat_line(i, echo_delay_s=5.0) for i in range(1, 4)]
    file_id = (await _upload(http, key, jsonl(lines))).json()["id"]
    batch = (await http.post("/v1/batches", headers=auth, json={
        "input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"})).json()
    assert batch["expires_at"] == batch["created_at"] + 24 * 3600
    with trio.fail_after(30):
        while (await http.get(f"/v1/batches/{batch['id']}", headers=auth)).json()[  # noqa: ASYNC110
                "request_counts"]["completed"] < 1:
            await trio.sleep(0.05)

    def past_window() -> None:  # as if 24 h had gone by
        with sqlite3.connect(plane.data / "plane" / "openai" / "batches.db") as conn:
            conn.execute("UPDATE batches SET expires_at=1 WHERE id=?", (batch["id"],))

    await trio.to_thread.run_sync(past_window)
    b = await finished(http, auth, batch["id"])
    assert b["status"] == "expired" and b["expired_at"] and b["request_counts"]["completed"] == 1
    output = (await http.get(f"/v1/files/{b['output_file_id']}/content", headers=auth)).text
    assert [json.loads(line)["custom_id"] for line in output.splitlines()] == ["req-0"]


async def test_a_tenant_allowed_one_request_at_a_time_still_gets_every_line_answered(plane):
    key = await plane.key("narrow", max_concurrency=1)
    http, auth = plane.client, {"Authorization": f"Bearer {key}"}
    file_id = (await _upload(http, key, jsonl([chat_line(i, echo_delay_s=0.05) for i in range(6)]))).json()["id"]
    batch = (await http.post("/v1/batches", headers=auth, json={
        "input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"})).json()
    b = await finished(http, auth, batch["id"])
    assert b["status"] == "completed" and b["request_counts"] == {"total": 6, "completed": 6, "failed": 0}
