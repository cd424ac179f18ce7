"""Step artifacts and broadcast routing on a real plane (hub, scheduler, gateway, jobs) with real
node agents: files under $FLOWCTL_OUTPUT_DIR uploaded and downloadable with their digest, limits
and escaping symlinks failing the step with the reason, tenants kept apart, hostile paths
refused; broadcast shards with FLOWCTL_SHARD_INDEX/TOTAL, one failing shard failing the step,
cancel stopping every shard."""

import hashlib
from functools import partial

import httpx
import pytest
import trio

from hub_store import collect_garbage
from runtime.plane import PlaneSettings, serve_control_plane
from tests.runtime.jobs.nodes import publish_echo
from tests.runtime.jobs.test_node_executor import ADMIN, AUTH, Cluster, job

LIMIT = 100_000


@pytest.fixture
async def cluster(nursery, tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWCTL_JOBS_ARTIFACT_MAX_BYTES", str(LIMIT))
    settings = PlaneSettings(data_dir=tmp_path / "plane", port=0, roles=("hub", "scheduler", "gateway", "jobs"),
                             heartbeat_interval=0.2, lost_after=1.5)
    with trio.fail_after(30):
        handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))
    async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
        await publish_echo(client, AUTH, tmp_path)
        yield Cluster(nursery, handle, client, tmp_path)


async def tenant_key(client, tenant):
    r = await client.post("/api/gateway/tenants", headers=AUTH, json={"name": tenant})
    assert r.status_code in (201, 409), r.text
    r = await client.post("/api/gateway/keys", headers=AUTH, json={"tenant": tenant})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['key']}"}


WRITE = ("mkdir -p $FLOWCTL_OUTPUT_DIR/sub && printf hello > $FLOWCTL_OUTPUT_DIR/a.txt && "
         "head -c 5000 /dev/urandom > $FLOWCTL_OUTPUT_DIR/sub/b.bin")


async def test_a_command_steps_outputs_are_artifacts_downloadable_with_their_digest(cluster):
    await cluster.node("n1")
    with trio.fail_after(60):
        run_id = await cluster.trigger(job("out", ["sh", "-c", WRITE]))
        run = await cluster.ended(run_id)
    assert run["state"] == "succeeded", run
    r = await cluster.client.get(f"/api/v1/runs/{run_id}/artifacts", headers=AUTH)
    listed = {a["path"]: a for a in r.json()["artifacts"]}
    assert sorted(listed) == ["a.txt", "sub/b.bin"] and listed["a.txt"]["size"] == 5
    assert listed["a.txt"]["sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert listed["a.txt"]["attempt"] == 1 and listed["a.txt"]["step"] == "main"
    r = await cluster.client.get(f"/api/v1/runs/{run_id}/artifacts/main/a.txt", headers=AUTH)
    assert r.status_code == 200 and r.content == b"hello"
    r = await cluster.client.get(f"/api/v1/runs/{run_id}/artifacts/main/sub/b.bin", headers=AUTH)
    assert hashlib.sha256(r.content).hexdigest() == listed["sub/b.bin"]["sha256"] and len(r.content) == 5000
    r = await cluster.client.get(f"/api/v1/runs/{run_id}/artifacts/main/a.txt", headers={**AUTH, "Range": "bytes=1-2"})
    assert r.status_code == 206 and r.content == b"el"
    assert (await cluster.client.get(f"/api/v1/runs/{run_id}/artifacts?step=other", headers=AUTH)).json()[
        "artifacts"] == []
    detail = (await cluster.client.get(f"/api/v1/runs/{run_id}", headers=AUTH)).json()  # embedded in the run too
    assert {a["path"]: a["sha256"] for a in detail["steps"][0]["artifacts"]} == {
        p: a["sha256"] for p, a in listed.items()} and detail["steps"][0]["shards"] == []
    # The module API sees the same, and the hub's GC keeps the blobs an artifact refers to.
    store = cluster.handle.jobs.artifacts
    found = await trio.to_thread.run_sync(store.find, run_id, "main", "a.txt")
    assert found is not None and found.digest == listed["a.txt"]["sha256"]
    store.catalog.release("jobs-artifact-upload")  # as if the uploads' short leases had expired
    await trio.to_thread.run_sync(collect_garbage, store.blobs, store.catalog)
    assert store.blobs.exists(found.digest)
    r = await cluster.client.get(f"/api/v1/runs/{run_id}/artifacts/main/a.txt", headers=AUTH)
    assert r.content == b"hello"


async def test_another_tenants_artifacts_are_404_and_hostile_paths_refused(cluster):
    await cluster.node("n1")
    with trio.fail_after(60):
        run_id = await cluster.trigger(job("out", ["sh", "-c", WRITE]))
        assert (await cluster.ended(run_id))["state"] == "succeeded"
    other = await tenant_key(cluster.client, "other")
    for path in (f"/api/v1/runs/{run_id}/artifacts", f"/api/v1/runs/{run_id}/artifacts/main/a.txt"):
        r = await cluster.client.get(path, headers=other)
        assert r.status_code == 404 and "no run" in r.json()["detail"], r.text
    assert (await cluster.client.get(f"/api/v1/runs/{run_id}/artifacts")).status_code == 401
    for hostile in ("%2e%2e/%2e%2e/etc/passwd", "sub/%2e%2e/a.txt", "%2e/a.txt", "sub//b.bin"):
        r = await cluster.client.get(f"/api/v1/runs/{run_id}/artifacts/main/{hostile}", headers=AUTH)
        assert r.status_code in (400, 404), (hostile, r.status_code, r.text)
        assert r.content != b"hello" and "detail" in r.json()
    r = await cluster.client.get(f"/api/v1/runs/{run_id}/artifacts/main/nope.txt", headers=AUTH)
    assert r.status_code == 404 and "no artifact 'nope.txt'" in r.json()["detail"]


async def test_a_node_upload_for_an_attempt_it_does_not_run_is_refused(cluster):
    await cluster.node("n1")
    r = await cluster.client.put("/api/cluster/jobs/blobs/" + "0" * 64, params={"run_id": "x", "step": "main",
                                 "attempt": "1"}, headers=AUTH, content=b"x")
    assert r.status_code == 401  # the admin key is no node credential
    r = await cluster.client.post("/api/cluster/jobs/artifacts", headers=AUTH, content=b"{nope")
    assert r.status_code == 400


@pytest.mark.parametrize(("script", "reason"), [
    (f"head -c {LIMIT + 1} /dev/zero > $FLOWCTL_OUTPUT_DIR/big.bin",
     f"artifacts: artifact 'big.bin' is {LIMIT + 1} bytes, over the limit of {LIMIT} bytes per file"),
    ("ln -s /etc/passwd $FLOWCTL_OUTPUT_DIR/leak",
     "artifacts: artifact 'leak' is a symbolic link to '/etc/passwd', outside $FLOWCTL_OUTPUT_DIR: refused"),
])
async def test_a_refused_artifact_fails_the_step_with_the_reason(cluster, script, reason):
    await cluster.node("n1")
    with trio.fail_after(60):
        run_id = await cluster.trigger(job("bad", ["sh", "-c", "printf ok > $FLOWCTL_OUTPUT_DIR/ok.txt; " + script]))
        run = await cluster.ended(run_id)
    assert run["state"] == "failed", run
    assert run["steps"][0]["attempts"][0]["reason"] == reason
    r = await cluster.client.get(f"/api/v1/runs/{run_id}/artifacts", headers=AUTH)
    assert r.json()["artifacts"] == []  # nothing half-recorded


SHARD = "echo shard=$FLOWCTL_SHARD_INDEX/$FLOWCTL_SHARD_TOTAL; echo $FLOWCTL_SHARD_INDEX/$FLOWCTL_SHARD_TOTAL > $FLOWCTL_OUTPUT_DIR/s.txt"


async def test_broadcast_runs_a_shard_on_every_matching_node(cluster):
    for name in ("n1", "n2", "n3"):
        await cluster.node(name, {"pool": "b"})
    await cluster.node("other", {"pool": "a"})
    ids = {n.node_id: n.name for n in cluster.handle.scheduler.registry.nodes()}
    with trio.fail_after(60):
        run_id = await cluster.trigger(job("bc", ["sh", "-c", SHARD], step={"selector": {"pool": "b"},
                                                                            "routing": "broadcast"}))
        run = await cluster.ended(run_id)
    assert run["state"] == "succeeded", run
    shards = (await cluster.client.get(f"/api/v1/runs/{run_id}/shards", headers=AUTH)).json()["shards"]
    assert [(s["shard"], s["total"], s["state"]) for s in shards] == [(k, 3, "succeeded") for k in range(3)]
    assert sorted(ids[s["node"]] for s in shards) == ["n1", "n2", "n3"]
    detail = (await cluster.client.get(f"/api/v1/runs/{run_id}", headers=AUTH)).json()  # the run embeds both
    assert [(s["shard"], s["state"], s["node"]) for s in detail["steps"][0]["shards"]] == [
        (s["shard"], s["state"], s["node"]) for s in shards]
    assert sorted(a["path"] for a in detail["steps"][0]["artifacts"]) == [f"shard-{k}/s.txt" for k in range(3)]
    for k in range(3):
        r = await cluster.client.get(f"/api/v1/runs/{run_id}/artifacts/main/shard-{k}/s.txt", headers=AUTH)
        assert r.text == f"{k}/3\n", r.text
    logs = (await cluster.client.get(f"/api/v1/runs/{run_id}/logs", headers=AUTH)).text
    assert all(f"[shard {k}] shard={k}/3" in logs for k in range(3)), logs


async def test_one_failing_shard_fails_the_broadcast_step(cluster):
    for name in ("n1", "n2", "n3"):
        await cluster.node(name)
    with trio.fail_after(60):
        run_id = await cluster.trigger(job("bc", ["sh", "-c", 'test "$FLOWCTL_SHARD_INDEX" != 1 || exit 7'],
                                           step={"routing": "broadcast"}))
        run = await cluster.ended(run_id)
    assert run["state"] == "failed", run
    assert run["steps"][0]["attempts"][0]["reason"].startswith("shard 1 of 3 failed: exit code 7"), run
    shards = (await cluster.client.get(f"/api/v1/runs/{run_id}/shards", headers=AUTH)).json()["shards"]
    assert [s["state"] for s in shards] == ["succeeded", "failed", "succeeded"]


async def test_cancel_stops_every_shard(cluster):
    for name in ("n1", "n2"):
        await cluster.node(name)
    with trio.fail_after(60):
        run_id = await cluster.trigger(job("bc", ["sh", "-c", "echo up; exec sleep 60"], step={"routing": "broadcast"}))
        logs = ""

        while not all(f"[shard {k}] up" in logs for k in (0, 1)):
            logs = (await cluster.client.get(f"/api/v1/runs/{run_id}/logs", headers=AUTH)).text
            await trio.sleep(0.05)
        began = trio.current_time()
        r = await cluster.client.post(f"/api/v1/runs/{run_id}/cancel", headers=AUTH)
        assert r.status_code in (200, 202), r.text
        run = await cluster.ended(run_id)
    assert run["state"] == "cancelled" and trio.current_time() - began < 10, run
    shards = (await cluster.client.get(f"/api/v1/runs/{run_id}/shards", headers=AUTH)).json()["shards"]
    assert [s["state"] for s in shards] == ["cancelled", "cancelled"], shards


async def test_a_lost_nodes_shard_is_retried_on_the_same_index_and_the_others_are_kept(cluster):
    scopes = {name: await cluster.node(name) for name in ("n1", "n2", "n3")}
    ids = {n.node_id: n.name for n in cluster.handle.scheduler.registry.nodes()}
    marker = cluster.tmp_path / "shard1.started"
    script = (f'if [ "$FLOWCTL_SHARD_INDEX" = 1 ] && [ "$FLOWCTL_ATTEMPT" = 1 ]; then touch {marker}; sleep 120; fi; '
              + SHARD)
    definition = job("bc", ["sh", "-c", script], step={"routing": "broadcast"},
                     policies={"retries": {"max_attempts": 2, "backoff": "0.1s"}})
    with trio.fail_after(60):
        run_id = await cluster.trigger(definition)
        while not marker.exists():  # noqa: ASYNC110 - a node's process writes it
            await trio.sleep(0.05)
        rows = (await cluster.client.get(f"/api/v1/runs/{run_id}/shards", headers=AUTH)).json()["shards"]
        lost_node = ids[next(r["node"] for r in rows if r["shard"] == 1)]
        scopes[lost_node].cancel()  # that node goes away with shard 1
        run = await cluster.ended(run_id)
    assert run["state"] == "succeeded", run
    one, two = run["steps"][0]["attempts"]
    assert one["state"] == "lost" and one["reason"].startswith("shard 1 of 3 lost: node"), one
    assert two["state"] == "succeeded", two
    shards = (await cluster.client.get(f"/api/v1/runs/{run_id}/shards?step=main", headers=AUTH)).json()["shards"]
    again = {s["shard"]: s for s in shards if s["attempt"] == 2}
    assert again[0]["reason"] == again[2]["reason"] == "succeeded in attempt 1"  # kept, not run again
    assert again[1]["state"] == "succeeded" and ids[again[1]["node"]] != lost_node
    r = await cluster.client.get(f"/api/v1/runs/{run_id}/artifacts/main/shard-1/s.txt", headers=AUTH)
    assert r.text == "1/3\n"
