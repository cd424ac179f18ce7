"""The jobs HTTP API on a real plane (hub, scheduler, gateway, jobs): keys and tenants, apply,
CRUD, trigger with parameters, runs, logs (plain and SSE), cancel, webhooks, /metrics."""

import json
import time
from functools import partial

import httpx
import pytest
import trio

from runtime.jobs.apply import MAX_APPLY_BYTES
from runtime.jobs.webhooks import sign
from runtime.plane import PlaneSettings, serve_control_plane
from tests.polling import wait_until
from tests.runtime.jobs.nodes import publish_echo, start_node

ADMIN = "jobs-admin-key"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
SECRET = "s3cret-hook"
HELLO = """
name = "hello"
[trigger]
type = "manual"
[parameters.who]
type = "string"
default = "nobody"
[parameters.times]
type = "int"
default = 1
[[steps]]
name = "main"
service = "echo@stable"
command = ["sh", "-c", "for i in $(seq $FLOWCTL_PARAM_TIMES); do echo hello $FLOWCTL_PARAM_WHO; done"]
"""
SLEEPER = {"name": "sleeper", "trigger": {"type": "manual"},
           "steps": [{"name": "main", "service": "echo@stable",
                      "command": ["sh", "-c", "echo started; sleep 60; echo never"]}]}
HOOKED = {"name": "hooked", "trigger": {"type": "webhook", "secret_name": "ci-hook", "replay_window": "5m"},
          "parameters": {"ref": {"type": "string", "default": "main"}},
          "steps": [{"name": "main", "service": "echo@stable", "command": ["sh", "-c", "echo ref=$FLOWCTL_PARAM_REF"]}]}


@pytest.fixture
async def plane(nursery, tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWCTL_WEBHOOK_SECRET_CI_HOOK", SECRET)
    settings = PlaneSettings(data_dir=tmp_path / "plane", port=0, roles=("hub", "scheduler", "gateway", "jobs"))
    with trio.fail_after(30):
        handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))
    async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
        await publish_echo(client, AUTH, tmp_path)  # command steps run in its environment, on the node
        await start_node(nursery, client, AUTH, handle.url, tmp_path / "node", "n1")
        yield client


async def tenant_key(client, tenant):
    r = await client.post("/api/gateway/tenants", headers=AUTH, json={"name": tenant})
    assert r.status_code in (201, 409), r.text
    r = await client.post("/api/gateway/keys", headers=AUTH, json={"tenant": tenant})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['key']}"}


async def finished(client, run_id, headers=AUTH):
    with trio.fail_after(20):
        while True:
            run = (await client.get(f"/api/v1/runs/{run_id}", headers=headers)).json()
            if run["state"] not in ("pending", "running"):
                return run
            await trio.sleep(0.05)


async def test_apply_dry_run_then_apply_then_trigger_with_a_parameter(plane):
    files = {"files": [{"name": "hello.toml", "text": HELLO}]}
    r = await plane.post("/api/v1/jobs/apply?dry_run=true", headers=AUTH, json=files)
    assert r.status_code == 200, r.text
    assert r.json() == {"dry_run": True, "changes": [
        {"tenant": "default", "name": "hello", "action": "create", "fields": []}]}
    assert (await plane.get("/api/v1/jobs/hello", headers=AUTH)).status_code == 404  # nothing applied
    r = await plane.post("/api/v1/jobs/apply", headers=AUTH, json=files)
    assert r.json()["changes"][0]["action"] == "create"
    job = (await plane.get("/api/v1/jobs/hello", headers=AUTH)).json()
    assert job["trigger"] == "manual" and job["definition"]["steps"][0]["name"] == "main"
    changed = HELLO.replace('default = "nobody"', 'default = "world"')
    r = await plane.post("/api/v1/jobs/apply", headers=AUTH,
                         json={"files": [{"name": "hello.toml", "text": changed}], "dry_run": True})
    assert r.json()["changes"][0]["action"] == "update"
    assert r.json()["changes"][0]["fields"] == ["parameters.who.default: 'nobody' -> 'world'"]

    r = await plane.post("/api/v1/jobs/hello/trigger", headers=AUTH, json={"parameters": {"who": "ada", "times": 2}})
    assert r.status_code == 202, r.text
    run = await finished(plane, r.json()["run_id"])
    assert run["state"] == "succeeded", run
    assert run["params"] == {"who": "ada", "times": 2}
    assert [s["step"] for s in run["steps"]] == ["main"]
    assert run["steps"][0]["attempts"][0]["state"] == "succeeded"
    logs = await plane.get(f"/api/v1/runs/{run['run_id']}/logs", headers=AUTH)
    assert logs.status_code == 200
    assert "hello ada\nhello ada\n" in logs.text
    listed = (await plane.get("/api/v1/runs?job=hello", headers=AUTH)).json()["runs"]
    assert [r["run_id"] for r in listed] == [run["run_id"]]


async def test_bad_input_gets_clear_4xx(plane):
    bad = HELLO.replace('type = "manual"', 'type = "cron"\ncron = "61 * * * *"')
    r = await plane.post("/api/v1/jobs/apply", headers=AUTH, json={"files": [
        {"name": "ok.toml", "text": HELLO.replace('"hello"', '"other"')}, {"name": "bad.toml", "text": bad}]})
    assert r.status_code == 400 and "bad.toml: trigger.cron" in r.json()["detail"]
    assert (await plane.get("/api/v1/jobs", headers=AUTH)).json()["jobs"] == []  # whole or nothing
    r = await plane.post("/api/v1/jobs/apply", headers=AUTH, json={"files": "x"})
    assert r.status_code == 400 and r.json()["detail"].startswith("files:")
    r = await plane.post("/api/v1/jobs/apply", headers=AUTH, content=b"{nope")
    assert r.status_code == 400
    await plane.post("/api/v1/jobs/apply", headers=AUTH, json={"files": [{"name": "h.toml", "text": HELLO}]})
    r = await plane.post("/api/v1/jobs/hello/trigger", headers=AUTH, json={"parameters": {"times": "ten"}})
    assert r.status_code == 400 and "times" in r.json()["detail"], r.text
    r = await plane.post("/api/v1/jobs/nope/trigger", headers=AUTH, json={})
    assert r.status_code == 404 and r.json()["detail"] == "no job 'nope' in tenant 'default'"
    r = await plane.post("/api/v1/jobs", headers=AUTH, json={"name": "hello", **SLEEPER, "name_": 1})
    assert r.status_code == 400
    r = await plane.post("/api/v1/jobs", headers=AUTH, json={**SLEEPER, "name": "hello"})
    assert r.status_code == 409
    assert (await plane.get("/api/v1/runs?limit=0", headers=AUTH)).status_code == 400
    assert (await plane.get("/api/v1/runs/run_nope", headers=AUTH)).status_code == 404
    assert (await plane.get("/api/v1/jobs")).status_code == 401


async def test_a_tenant_key_sees_only_its_tenant(plane):
    acme, other = await tenant_key(plane, "acme"), await tenant_key(plane, "other")
    r = await plane.put("/api/v1/jobs/sleeper?tenant=acme", headers=AUTH, json=SLEEPER)
    assert r.status_code == 201 and r.json()["job"]["tenant"] == "acme"
    assert [j["name"] for j in (await plane.get("/api/v1/jobs", headers=acme)).json()["jobs"]] == ["sleeper"]
    assert (await plane.get("/api/v1/jobs", headers=other)).json()["jobs"] == []
    assert (await plane.get("/api/v1/jobs/sleeper", headers=other)).status_code == 404
    assert (await plane.get("/api/v1/jobs/sleeper?tenant=acme", headers=other)).status_code == 404
    # Commands run on nodes, not on the plane's machine: a tenant key defines its own tenant's jobs.
    r = await plane.put("/api/v1/jobs/mine", headers=acme, json={**SLEEPER, "name": "mine"})
    assert r.status_code == 201 and r.json()["job"]["tenant"] == "acme", r.text
    assert (await plane.get("/api/v1/jobs/mine", headers=other)).status_code == 404
    r = await plane.post("/api/v1/jobs/sleeper/trigger", headers=acme)
    assert r.status_code == 202
    run_id = r.json()["run_id"]
    assert (await plane.get(f"/api/v1/runs/{run_id}", headers=other)).status_code == 404
    assert (await plane.post(f"/api/v1/runs/{run_id}/cancel", headers=other)).status_code == 404
    assert (await plane.get(f"/api/v1/runs/{run_id}/logs", headers=other)).status_code == 404
    assert (await plane.get("/api/v1/runs", headers=other)).json()["runs"] == []
    r = await plane.post(f"/api/v1/runs/{run_id}/cancel", headers=acme)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert (await plane.get("/api/v1/jobs", headers={"Authorization": "Bearer fgk_bogus"})).status_code == 401


async def test_cancel_stops_the_process_group_within_two_seconds(plane, tmp_path):
    marker = tmp_path / "child.pid"
    job = {"name": "group", "trigger": {"type": "manual"}, "steps": [{"name": "main", "service": "echo@stable",
           "command": ["sh", "-c", f"sleep 60 & echo $! > {marker}; echo started; wait"]}]}
    assert (await plane.post("/api/v1/jobs", headers=AUTH, json=job)).status_code == 201
    run_id = (await plane.post("/api/v1/jobs/group/trigger", headers=AUTH)).json()["run_id"]
    with trio.fail_after(10):
        await wait_until(lambda: marker.exists() and marker.read_text().strip() != "")
    child = int(marker.read_text())
    started = time.monotonic()
    r = await plane.post(f"/api/v1/runs/{run_id}/cancel", headers=AUTH)
    assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
    with trio.fail_after(2 - (time.monotonic() - started)):
        await wait_until(lambda: not _alive(child))
    again = await plane.post(f"/api/v1/runs/{run_id}/cancel", headers=AUTH)
    assert again.status_code == 409


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_logs_follow_streams_lines_as_server_sent_events(plane):
    job = {"name": "ticker", "trigger": {"type": "manual"}, "steps": [{"name": "main", "service": "echo@stable",
           "command": ["sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.2; done"]}]}
    await plane.post("/api/v1/jobs", headers=AUTH, json=job)
    run_id = (await plane.post("/api/v1/jobs/ticker/trigger", headers=AUTH)).json()["run_id"]
    events = []
    with trio.fail_after(20):
        async with plane.stream("GET", f"/api/v1/runs/{run_id}/logs?follow=true&step=main", headers=AUTH) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            async for line in r.aiter_lines():
                if line:
                    events.append(line)
    assert events[:2] == ["event: attempt", 'data: {"step": "main", "attempt": 1}']
    assert [e for e in events if e.startswith("data: tick")] == ["data: tick 1", "data: tick 2", "data: tick 3"]
    assert events[-2:] == ["event: end", 'data: {"state": "succeeded", "reason": ""}']
    r = await plane.get(f"/api/v1/runs/{run_id}/logs?step=nope", headers=AUTH)
    assert r.status_code == 404 and "steps: main" in r.json()["detail"]


async def test_webhook_runs_on_a_good_signature_and_refuses_bad_ones(plane):
    assert (await plane.post("/api/v1/jobs", headers=AUTH, json=HOOKED)).status_code == 201
    body = json.dumps({"parameters": {"ref": "v2"}}).encode()
    now = int(time.time())
    headers = {"X-Flowctl-Timestamp": str(now), "X-Flowctl-Signature": sign(SECRET.encode(), now, body)}
    r = await plane.post("/api/v1/hooks/default/hooked", content=body, headers=headers)
    assert r.status_code == 202, r.text
    run = await finished(plane, r.json()["run_id"])
    assert run["state"] == "succeeded" and run["cause"] == "webhook" and run["params"] == {"ref": "v2"}
    replay = await plane.post("/api/v1/hooks/default/hooked", content=body, headers=headers)
    assert replay.status_code == 401 and "replay" in replay.json()["detail"]
    bad = {**headers, "X-Flowctl-Signature": sign(b"wrong", now, body)}
    r = await plane.post("/api/v1/hooks/default/hooked", content=body + b" ", headers=bad)
    assert r.status_code == 401 and "does not match" in r.json()["detail"]
    old = now - 3600
    r = await plane.post("/api/v1/hooks/default/hooked", content=body,
                         headers={"X-Flowctl-Timestamp": str(old), "X-Flowctl-Signature": sign(SECRET.encode(), old, body)})
    assert r.status_code == 401 and "replay window" in r.json()["detail"]
    assert (await plane.post("/api/v1/hooks/default/nope", content=body, headers=headers)).status_code == 404
    assert (await plane.post("/api/v1/hooks/other/hooked", content=body, headers=headers)).status_code == 404


async def test_suspend_resume_delete_and_metrics(plane):
    await plane.post("/api/v1/jobs", headers=AUTH, json=SLEEPER)
    r = await plane.post("/api/v1/jobs/sleeper/suspend", headers=AUTH)
    assert r.status_code == 200 and r.json()["suspended"] is True
    r = await plane.post("/api/v1/jobs/sleeper/resume", headers=AUTH)
    assert r.json()["suspended"] is False
    assert (await plane.delete("/api/v1/jobs/sleeper", headers=AUTH)).status_code == 200
    assert (await plane.get("/api/v1/jobs/sleeper", headers=AUTH)).status_code == 404
    metrics = await plane.get("/metrics", headers=AUTH)
    assert metrics.status_code == 200 and "flowctl_jobs_queue_depth" in metrics.text


async def test_hostile_requests_get_clear_4xx(plane):
    r = await plane.post("/api/v1/jobs/apply?tenant=acme", headers=AUTH, json={"files": [{"name": "h.toml", "text": HELLO}]})
    assert r.json()["changes"][0]["tenant"] == "acme"  # the admin applies in the tenant it names
    r = await plane.post("/api/v1/jobs/apply?tenant=acme", headers=AUTH, json={"files": [
        {"name": "h.toml", "text": 'tenant = "other"\n' + HELLO}]})
    assert r.status_code == 400 and "tenant: 'other' is not the tenant applying it ('acme')" in r.json()["detail"]
    r = await plane.post("/api/v1/jobs/apply", headers=AUTH, json={"files": [{"name": "h.toml", "text": 3}]})
    assert r.status_code == 400 and "files[0]" in r.json()["detail"]
    r = await plane.post("/api/v1/jobs/apply", headers=AUTH, json={"files": [{"name": "h.json", "text": "{}"}]})
    assert r.status_code == 400 and "h.json: not a .toml" in r.json()["detail"]
    r = await plane.post("/api/v1/jobs/apply", headers=AUTH, json={"files": [{"name": "h.toml", "text": "x = ["}]})
    assert r.status_code == 400 and r.json()["detail"].startswith("h.toml")
    r = await plane.post("/api/v1/jobs/apply", headers=AUTH, content=b"x" * (MAX_APPLY_BYTES + 1))
    assert r.status_code == 413
    r = await plane.post("/api/v1/jobs/hello/trigger", headers=AUTH, content=b"x" * (2 << 20))
    assert r.status_code == 413  # only the apply route takes a whole fleet's definitions
    r = await plane.put("/api/v1/jobs/other", headers=AUTH, json=SLEEPER)
    assert r.status_code == 400 and "does not match" in r.json()["detail"]
    r = await plane.put("/api/v1/jobs/sleeper", headers=AUTH, json=[1])
    assert r.status_code == 400
    r = await plane.post("/api/v1/jobs/hello/trigger?tenant=acme", headers=AUTH, json={"parameters": [1]})
    assert r.status_code == 400 and r.json()["detail"].startswith("parameters:")
    r = await plane.post("/api/v1/jobs/hello/trigger?tenant=acme", headers=AUTH, json={"parameters": {"nope": 1}})
    assert r.status_code == 400 and "nope" in r.json()["detail"]
    r = await plane.post("/api/v1/hooks/acme/hello", content=b"{}", headers={
        "X-Flowctl-Timestamp": "1", "X-Flowctl-Signature": "sha256=0"})
    assert r.status_code == 404  # a manual job has no webhook
    await plane.post("/api/v1/jobs", headers=AUTH, json=HOOKED)
    r = await plane.post("/api/v1/hooks/default/hooked", content=b"{}", headers={
        "X-Flowctl-Timestamp": str(int(time.time())).encode(), "X-Flowctl-Signature": "sha256=\u00e9".encode()})
    assert r.status_code == 401 and "does not match" in r.json()["detail"]
    r = await plane.post("/api/v1/hooks/default/hooked", content=b"{}", headers={
        "X-Flowctl-Timestamp": "99999999999999999999", "X-Flowctl-Signature": "sha256=0"})
    assert r.status_code == 401 and "Unix seconds" in r.json()["detail"]
    for path in ("/api/v1/runs?limit=abc", "/api/v1/runs?limit=100000", "/api/v1/runs/x/logs?attempt=-1"):
        r = await plane.get(path, headers=AUTH)
        assert r.status_code in (400, 404) and "detail" in r.json(), path


async def test_the_webhook_secret_and_admin_key_never_reach_a_step(plane):
    job = {"name": "env", "trigger": {"type": "manual"},
           "steps": [{"name": "main", "service": "echo@stable", "command": ["env"]}]}
    await plane.post("/api/v1/jobs", headers=AUTH, json=job)
    run = await finished(plane, (await plane.post("/api/v1/jobs/env/trigger", headers=AUTH)).json()["run_id"])
    logs = (await plane.get(f"/api/v1/runs/{run['run_id']}/logs", headers=AUTH)).text
    assert run["state"] == "succeeded" and "FLOWCTL_JOB=env" in logs
    assert SECRET not in logs and ADMIN not in logs and "FLOWCTL_WEBHOOK_SECRET" not in logs


async def test_apply_takes_thousands_of_definitions_in_one_request(plane):
    text = 'name = "n{i:04d}"\n[trigger]\ntype = "cron"\ncron = "{m} 3 * * *"\n' \
           '[[steps]]\nname = "s"\nservice = "echo@1.0.0"\ncommand = ["true"]\n'
    files = [{"name": f"n{i:04d}.toml", "text": text.format(i=i, m=i % 60)} for i in range(1500)]
    r = await plane.post("/api/v1/jobs/apply", headers=AUTH, json={"files": files}, timeout=120)
    assert r.status_code == 200, r.text
    assert [c["action"] for c in r.json()["changes"]] == ["create"] * 1500
    assert len((await plane.get("/api/v1/jobs", headers=AUTH)).json()["jobs"]) >= 1500
    r = await plane.post("/api/v1/jobs/apply", headers=AUTH, json={"files": files}, timeout=120)
    assert {c["action"] for c in r.json()["changes"]} == {"unchanged"}
    r = await plane.post("/api/v1/jobs/apply", headers=AUTH, json={"files": files * 7}, timeout=120)
    assert r.status_code == 400 and "at most 10000 at once" in r.json()["detail"]
