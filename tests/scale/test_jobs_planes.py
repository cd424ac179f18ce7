"""Jobs across several planes (issue 18): one firing leader on a shared PostgreSQL, failover without duplicates.

Three `flowctl serve` planes with the jobs role on one real PostgreSQL and one real node attached
to all three (tests/scale/planes.py). A 1 s interval job is defined through plane a and read
through plane c. Its command appends the run id, the attempt and the leader epoch to a file on
the node's host before sleeping a second, so "once per scheduled time" is checked on what ran,
not only on the runs table (whose UNIQUE (job_id, fire_time) would hide a second execution), and
the jobs leader is SIGKILLed while an attempt runs on the node.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from hub_store import sql
from runtime.scheduler.leadership import SqlLease, open_leases
from tests.scale.planes import TTL, Proc, api, cluster, join_token, publish_echo

pytestmark = pytest.mark.engines

JOB = "tick"


def job(ran: Path) -> dict[str, Any]:
    """Every second, a second long (so one is in flight at the kill); each execution leaves `RUN ATTEMPT EPOCH`
    in `ran`. A retry is allowed, so an attempt wrongly recorded lost shows as a second execution; missed
    fires are caught up, so a slow takeover on a loaded box drops none."""
    return {"name": JOB, "trigger": {"type": "interval", "every": 1},
            "policies": {"history": {"succeeded": 1000, "failed": 1000},
                         "retries": {"max_attempts": 2, "backoff": "1s"},
                         "misfire": {"policy": "catch_up", "max": 100}},
            "steps": [{"name": "main", "service": "echo@stable", "command": [
                "sh", "-c", f'echo "$FLOWCTL_RUN_ID $FLOWCTL_ATTEMPT $FLOWCTL_EPOCH" >> {ran}; sleep 1']}]}


async def runs(proc: Proc) -> list[dict[str, Any]]:
    r = await api(proc, "GET", f"/api/v1/runs?job={JOB}&limit=1000")
    assert r.status_code == 200, r.text
    return r.json()["runs"]


async def detail(proc: Proc, run_id: str) -> dict[str, Any]:
    r = await api(proc, "GET", f"/api/v1/runs/{run_id}")
    assert r.status_code == 200, r.text
    return r.json()


async def jobs_holder(leases: sql.Database) -> tuple[str, int] | None:
    """(plane, epoch) holding the jobs lease now, by the database's clock, or None."""
    held = await trio.to_thread.run_sync(SqlLease(leases, "observer", name="jobs").holder_now)
    return None if held is None or held[2] <= 0 else (held[0], held[1])


async def running_on_the_node(proc: Proc) -> str:
    """A run whose attempt the node has reported running (so its node is recorded): the one to kill under."""
    while True:
        for run in await runs(proc):
            if run["state"] == "running":
                attempts = (await detail(proc, run["run_id"]))["steps"][0]["attempts"]
                if attempts and attempts[-1]["state"] == "running":
                    return str(run["run_id"])
        await trio.sleep(0.05)


async def succeeded_after(proc: Proc, fire_time: float) -> list[dict[str, Any]]:
    return [run for run in await runs(proc) if run["state"] == "succeeded" and run["fire_time"] > fire_time]


async def until(found: Callable[[], Awaitable[list[Any]]], count: int) -> None:
    """Poll until `found()` lists at least `count` items; the caller's fail_after bounds it."""
    while len(await found()) < count:  # noqa: ASYNC110 - the state lives in other processes
        await trio.sleep(0.2)


async def settled(proc: Proc) -> float:
    """A time by which every run due has ended (runs are planned 5 s ahead: later ones stay pending)."""
    while True:
        cutoff = time.time() - 2
        if not [run for run in await runs(proc) if run["state"] in ("pending", "running") and run["due_at"] <= cutoff]:
            return cutoff
        await trio.sleep(0.2)


async def test_an_interval_job_fires_once_per_time_across_planes_and_past_its_leaders_death(tmp_path, postgres_url):
    leases = open_leases(sql.State.parse(postgres_url))
    ran = tmp_path / "ran.txt"
    ran.touch()
    try:
        with trio.fail_after(150):
            async with cluster(tmp_path, postgres_url) as c:
                a = await c.plane("a")
                await c.plane("b")
                pc = await c.plane("c")
                await publish_echo(a, tmp_path)
                await c.node("n1", ["a", "b", "c"], await join_token(a))
                r = await api(a, "POST", "/api/v1/jobs", json=job(ran))
                assert r.status_code == 201, r.text

                await until(lambda: succeeded_after(pc, 0), 3)  # fired, run on the node, seen through c
                in_flight = await running_on_the_node(pc)
                held = await jobs_holder(leases)
                assert held is not None, "nobody holds the jobs lease while runs succeed"
                first_leader, first_epoch = held
                killed_at, killed_wall = trio.current_time(), time.time()
                c.planes[first_leader].process.send_signal(signal.SIGKILL)
                await c.planes[first_leader].process.wait()
                observer = pc if first_leader != "c" else c.planes["b"]

                # Another plane fires: a run scheduled after the kill succeeds within TTL + a few seconds.
                await until(lambda: succeeded_after(observer, killed_wall), 1)
                took = trio.current_time() - killed_at
                assert took < TTL + 5, took
                held = await jobs_holder(leases)
                assert held is not None and held[0] != first_leader and held[1] > first_epoch, held
                second_epoch = held[1]

                await until(lambda: succeeded_after(observer, killed_wall), 3)
                cutoff = await settled(observer)
                every = await runs(observer)
                for name, proc in c.planes.items():  # every live plane's API sees the same runs
                    if proc.alive():
                        assert {run["run_id"] for run in await runs(proc)} >= {run["run_id"] for run in every}, name
                kept = await detail(observer, in_flight)
                executions = [line.split() for line in ran.read_text().splitlines()]
    finally:
        leases.close()

    seen = [run for run in every if run["due_at"] <= cutoff]
    fire_times = sorted(run["fire_time"] for run in seen)
    assert len(fire_times) == len(set(fire_times)), fire_times  # one run per scheduled time
    assert all(run["cause"] == "schedule" for run in seen), {run["cause"] for run in seen}
    assert fire_times == list(range(fire_times[0], fire_times[-1] + 1)), fire_times  # none dropped at the failover
    assert {run["state"] for run in seen} == {"succeeded"}, [(r["fire_time"], r["state"], r["reason"]) for r in seen]

    by_run: dict[str, list[tuple[int, int]]] = {}
    for run_id, attempt, epoch in executions:
        by_run.setdefault(run_id, []).append((int(attempt), int(epoch)))
    assert {run["run_id"] for run in seen} <= set(by_run) <= {run["run_id"] for run in every}  # each ran, no stray
    assert all(len(done) == 1 for run_id, done in by_run.items()), by_run  # each executed once, attempt 1
    assert {epoch for done in by_run.values() for _, epoch in done} >= {first_epoch, second_epoch}
    # The attempt running at the kill was re-attached by the new leader, not recorded lost and run again.
    assert by_run[in_flight] == [(1, first_epoch)], by_run[in_flight]
    attempts = kept["steps"][0]["attempts"]
    assert [(x["attempt"], x["state"], x["epoch"]) for x in attempts] == [(1, "succeeded", first_epoch)], kept
