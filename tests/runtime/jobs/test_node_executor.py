"""Command steps run on real node agents joined to a real plane: node choice by labels (a
selector no node matches leaves the attempt pending, saying so), parameters and logs, cancel
stopping the process group, and a node lost mid-step retried on another node as attempt 2."""

import json
import os
import time
from functools import partial

import httpx
import pytest
import trio

from runtime.plane import PlaneSettings, serve_control_plane
from tests.polling import wait_until
from tests.runtime.jobs.nodes import publish_echo, start_node

ADMIN = "jobs-nodes-admin"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def job(name, command, **extra):
    step = {"name": "main", "service": "echo@stable", "command": command, **extra.pop("step", {})}
    return {"name": name, "trigger": {"type": "manual"}, "steps": [step], **extra}


class Cluster:
    def __init__(self, nursery, handle, client, tmp_path):
        self.nursery, self.handle, self.client, self.tmp_path = nursery, handle, client, tmp_path
        self.nodes = {}

    async def node(self, name, labels=None):
        self.nodes[name] = await start_node(self.nursery, self.client, AUTH, self.handle.url,
                                            self.tmp_path / name, name, labels)
        return self.nodes[name]

    async def trigger(self, definition, params=None):
        r = await self.client.put(f"/api/v1/jobs/{definition['name']}", headers=AUTH, json=definition)
        assert r.status_code in (200, 201), r.text
        r = await self.client.post(f"/api/v1/jobs/{definition['name']}/trigger", headers=AUTH,
                                   json={"parameters": params or {}})
        assert r.status_code == 202, r.text
        return r.json()["run_id"]

    async def run(self, run_id):
        return (await self.client.get(f"/api/v1/runs/{run_id}", headers=AUTH)).json()

    async def ended(self, run_id):
        while (run := await self.run(run_id))["state"] in ("pending", "running"):  # noqa: ASYNC110 - the plane's
            await trio.sleep(0.05)
        return run


@pytest.fixture
async def cluster(nursery, tmp_path):
    settings = PlaneSettings(data_dir=tmp_path / "plane", port=0, roles=("hub", "scheduler", "jobs"),
                             heartbeat_interval=0.2, lost_after=1.5)
    with trio.fail_after(30):
        handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))
    async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
        await publish_echo(client, AUTH, tmp_path)
        yield Cluster(nursery, handle, client, tmp_path)


def attempts(run):
    return run["steps"][0]["attempts"] if run.get("steps") else []  # a run just made has no steps yet


async def test_a_command_runs_on_a_node_in_the_bundle_tree_with_its_parameter(cluster):
    await cluster.node("n1")
    node_id = next(iter(n.node_id for n in cluster.handle.scheduler.registry.nodes()))
    definition = job("hello", ["sh", "-c", "echo hello $FLOWCTL_PARAM_WHO; ls service.json; pwd"],
                     parameters={"who": {"type": "string", "default": "x"}})
    with trio.fail_after(60):
        run_id = await cluster.trigger(definition, {"who": "ada"})
        run = await cluster.ended(run_id)
    assert run["state"] == "succeeded", run
    assert attempts(run)[0]["node"] == node_id
    logs = (await cluster.client.get(f"/api/v1/runs/{run_id}/logs", headers=AUTH)).text
    assert "hello ada" in logs and "service.json" in logs, logs
    assert str(cluster.tmp_path / "n1") in logs  # ran in the node's installed echo tree


async def test_a_selector_no_node_matches_leaves_the_attempt_pending_with_the_reason(cluster):
    await cluster.node("n1")
    with trio.fail_after(30):
        run_id = await cluster.trigger(job("gpu", ["true"], step={"selector": {"gpu": "a100"}}))
        wanted = "pending: no node with labels gpu=a100"
        while not (a := attempts(await cluster.run(run_id))) or a[0]["reason"] != wanted:  # noqa: ASYNC110
            await trio.sleep(0.05)
    run = await cluster.run(run_id)
    assert run["state"] == "running" and attempts(run)[0]["state"] == "dispatched"
    r = await cluster.client.post(f"/api/v1/runs/{run_id}/cancel", headers=AUTH)
    assert r.status_code in (200, 202), r.text


async def test_a_selector_on_the_node_name_picks_that_node(cluster):
    await cluster.node("n1")
    await cluster.node("n2")
    ids = {n.name: n.node_id for n in cluster.handle.scheduler.registry.nodes()}
    with trio.fail_after(60):
        run = await cluster.ended(await cluster.trigger(job("pick", ["true"], step={"selector": {"node": "n2"}})))
    assert run["state"] == "succeeded" and attempts(run)[0]["node"] == ids["n2"]


async def test_a_selector_on_labels_picks_the_node_that_declared_them(cluster):
    await cluster.node("cpu-box", {"zone": "eu"})
    await cluster.node("gpu-box", {"gpu": "a100", "zone": "eu"})
    ids = {n.name: n.node_id for n in cluster.handle.scheduler.registry.nodes()}
    shown = {n["name"]: n["labels"] for n in cluster.handle.scheduler.status()["nodes"]}
    assert shown == {"cpu-box": {"zone": "eu"}, "gpu-box": {"gpu": "a100", "zone": "eu"}}
    with trio.fail_after(60):
        for _ in range(3):  # not by chance: the least loaded node would alternate
            run = await cluster.ended(await cluster.trigger(
                job("train", ["true"], step={"selector": {"gpu": "a100", "zone": "eu"}})))
            assert run["state"] == "succeeded" and attempts(run)[0]["node"] == ids["gpu-box"], run


async def _nodes_of_runs(cluster, definition, params_list):
    ids = {n.node_id: n.name for n in cluster.handle.scheduler.registry.nodes()}
    names = []
    for params in params_list:
        run = await cluster.ended(await cluster.trigger(definition, params))
        assert run["state"] == "succeeded", run
        names.append(ids[attempts(run)[0]["node"]])
    return names


async def test_round_robin_takes_the_matching_nodes_in_turn(cluster):
    for name in ("n1", "n2", "n3"):
        await cluster.node(name, {"pool": "b"} if name != "n3" else {"pool": "a"})
    definition = job("rr", ["true"], step={"selector": {"pool": "b"}, "routing": "round_robin"})
    with trio.fail_after(90):
        names = await _nodes_of_runs(cluster, definition, [{}] * 4)
    assert names in (["n1", "n2", "n1", "n2"], ["n2", "n1", "n2", "n1"]), names


async def test_consistent_hash_keeps_a_key_on_one_node(cluster):
    from runtime.jobs.routing import rendezvous

    await cluster.node("n1")
    await cluster.node("n2")
    nodes = list(cluster.handle.scheduler.registry.nodes())
    definition = job("ch", ["true"], step={"routing": {"strategy": "consistent_hash", "key": "{params.customer}"}},
                     parameters={"customer": {"type": "string", "default": "x"}})
    customers = ["acme", "globex", "acme", "initech", "globex", "acme"]
    with trio.fail_after(120):
        names = await _nodes_of_runs(cluster, definition, [{"customer": c} for c in customers])
    placed = {}
    for customer, name in zip(customers, names, strict=True):
        assert placed.setdefault(customer, name) == name, (customer, names)  # the same key, the same node
        assert name == rendezvous(customer, nodes).name


async def test_failover_takes_the_first_connected_node_in_order(cluster):
    await cluster.node("n1")
    await cluster.node("n2")
    definition = job("fo", ["true"], step={"routing": {"strategy": "failover", "order": ["ghost", "n2", "n1"]}})
    with trio.fail_after(60):
        assert await _nodes_of_runs(cluster, definition, [{}, {}]) == ["n2", "n2"]
        run_id = await cluster.trigger(job("fo2", ["true"], step={"routing": {"strategy": "failover",
                                                                              "order": ["ghost"]}}))
        wanted = "pending: none of the failover nodes (ghost) is connected and matching"
        while not (a := attempts(await cluster.run(run_id))) or a[0]["reason"] != wanted:  # noqa: ASYNC110
            await trio.sleep(0.05)
    await cluster.client.post(f"/api/v1/runs/{run_id}/cancel", headers=AUTH)


async def test_a_step_waits_for_the_resources_it_needs_and_says_so(cluster):
    await cluster.node("n1")
    cpus = os.cpu_count()
    marker = cluster.tmp_path / "go"
    hog = job("hog", ["sh", "-c", f"while [ ! -e {marker} ]; do sleep 0.05; done"],
              step={"resources": {"cpu": cpus}})
    with trio.fail_after(90):
        first = await cluster.trigger(hog)
        while not (a := attempts(await cluster.run(first))) or a[0]["state"] != "running":  # noqa: ASYNC110
            await trio.sleep(0.05)
        second = await cluster.trigger(job("next", ["true"], step={"resources": {"cpu": 1}}))
        wanted = "pending: no matching node has 1 CPU free"
        while not (a := attempts(await cluster.run(second))) or a[0]["reason"] != wanted:  # noqa: ASYNC110
            await trio.sleep(0.05)
        huge = await cluster.trigger(job("huge", ["true"], step={"resources": {"memory_mb": 1_000_000}}))
        wanted_huge = "pending: no matching node has 1000000 MB of memory free"
        while not (a := attempts(await cluster.run(huge))) or a[0]["reason"] != wanted_huge:  # noqa: ASYNC110
            await trio.sleep(0.05)
        marker.touch()  # the hog ends: its CPUs are free, and the waiting step runs
        assert (await cluster.ended(first))["state"] == "succeeded"
        assert (await cluster.ended(second))["state"] == "succeeded"
    await cluster.client.post(f"/api/v1/runs/{huge}/cancel", headers=AUTH)


async def test_cancel_stops_the_process_group_within_two_seconds(cluster):
    await cluster.node("n1")
    marker = cluster.tmp_path / "child.pid"
    with trio.fail_after(60):
        run_id = await cluster.trigger(job("sleeper", ["sh", "-c", f"sleep 120 & echo $! > {marker}; wait"]))
        await wait_until(lambda: marker.exists() and marker.read_text().strip())
        child = int(marker.read_text())
        began = time.monotonic()
        r = await cluster.client.post(f"/api/v1/runs/{run_id}/cancel", headers=AUTH)
        assert r.status_code == 200, r.text
        await wait_until(lambda: not alive(child))
    assert time.monotonic() - began < 2.0
    run = await cluster.run(run_id)
    assert run["state"] == "cancelled" and attempts(run)[0]["state"] == "cancelled"


async def test_a_node_lost_mid_step_is_retried_elsewhere_as_attempt_2(cluster):
    first = await cluster.node("n1")
    marker = cluster.tmp_path / "first.node"
    definition = job("moving", ["sh", "-c", f'if [ "$FLOWCTL_ATTEMPT" = 1 ]; then echo $FLOWCTL_OUTPUT_DIR > {marker}; '
                                            'sleep 120; else echo second; fi'],
                     policies={"retries": {"max_attempts": 2, "backoff": "0.1s"}})
    with trio.fail_after(60):
        run_id = await cluster.trigger(definition)
        await wait_until(lambda: marker.exists() and marker.read_text().strip())
        await cluster.node("n2")
        first.cancel()  # the node goes away with its step
        run = await cluster.ended(run_id)
    assert run["state"] == "succeeded", run
    one, two = attempts(run)
    assert one["state"] == "lost" and "n1" in one["reason"], one
    ids = {n.name: n.node_id for n in cluster.handle.scheduler.registry.nodes()}
    assert two["attempt"] == 2 and two["state"] == "succeeded" and two["node"] == ids["n2"]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


async def test_a_node_back_after_its_attempt_was_lost_is_told_to_stop_it_and_the_result_is_kept_late(cluster):
    from runtime.control.messages import REPLACED

    await cluster.node("n1")
    marker = cluster.tmp_path / "first.pid"
    definition = job("blip", ["sh", "-c", f'if [ "$FLOWCTL_ATTEMPT" = 1 ]; then sleep 120 & echo $! > {marker}; '
                                          'wait; else echo second; fi'],
                     policies={"retries": {"max_attempts": 2, "backoff": "0.1s"}})
    with trio.fail_after(60):
        run_id = await cluster.trigger(definition)
        await wait_until(lambda: marker.exists() and marker.read_text().strip())
        first = int(marker.read_text())
        [node] = cluster.handle.scheduler.registry.nodes()
        # The connection drops (the node is lost at once) and the agent reconnects at once,
        # reporting attempt 1 still running: superseded, so it is stopped.
        cluster.handle.scheduler._links[node.node_id].close("a network blip", REPLACED)
        run = await cluster.ended(run_id)
        await wait_until(lambda: not alive(first))
        while not attempts(await cluster.run(run_id))[0]["late_result"]:  # noqa: ASYNC110
            await trio.sleep(0.05)
    one, two = attempts(await cluster.run(run_id))
    assert run["state"] == "succeeded" and one["state"] == "lost" and two["state"] == "succeeded"
    late = one["late_result"] if isinstance(one["late_result"], dict) else json.loads(one["late_result"])
    assert late["state"] == "cancelled" and "already settled" in late["reason"], late


async def test_the_outbox_buffers_while_away_and_keeps_reports_over_log_pieces():
    from runtime.control.messages import JobLog, JobReport
    from runtime.node.agent.jobs import JobOutbox

    class Mux:
        def __init__(self):
            self.sent = []

        async def send_control(self, text):
            self.sent.append(text)

    outbox = JobOutbox(max_buffered=3)
    await outbox.send(JobReport("r", "s", 1, 1, "running"))
    for i in range(4):
        await outbox.send(JobLog("r", "s", 1, f"line {i}\n"))
    mux = Mux()
    await outbox.attach(mux, [JobReport("r", "s", 2, 1, "running")])
    assert ['"running"' in t or "line" in t for t in mux.sent] == [True] * 4
    assert "line 2" in mux.sent[1] and "line 3" in mux.sent[2] and '"attempt":2' in mux.sent[3]
    await outbox.send(JobLog("r", "s", 1, "now\n"))
    assert "now" in mux.sent[-1]
    outbox.detach(mux)
    await outbox.send(JobLog("r", "s", 1, "later\n"))
    assert "later" not in mux.sent[-1]


async def test_a_cron_fire_prepared_ahead_starts_on_its_node_never_before_its_second(cluster):
    await cluster.node("n1")
    definition = {"name": "tick", "trigger": {"type": "cron", "cron": "* * * * * *", "timezone": "UTC"},
                  "steps": [{"name": "main", "service": "echo@stable",
                             "command": ["python3", "-c", "import time; print('at', repr(time.time()))"]}]}
    r = await cluster.client.put("/api/v1/jobs/tick", headers=AUTH, json=definition)
    assert r.status_code in (200, 201), r.text
    with trio.fail_after(30):
        while len(done := [run for run in (await cluster.client.get(  # noqa: ASYNC110 - the plane's
                "/api/v1/runs?job=tick&state=succeeded", headers=AUTH)).json()["runs"]]) < 3:
            await trio.sleep(0.1)
    r = await cluster.client.post("/api/v1/jobs/tick/suspend", headers=AUTH)
    assert r.status_code in (200, 202, 204), r.text
    for run in done:
        log = (await cluster.client.get(f"/api/v1/runs/{run['run_id']}/logs", headers=AUTH)).text
        began = float(log.split("at ", 1)[1].split()[0])
        assert run["started_at"] == run["fire_time"] == run["due_at"], run  # recorded at its second
        assert run["fire_time"] <= began < run["fire_time"] + 5, (run, log)  # sent at it, not before
