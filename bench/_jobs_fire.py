"""bench/jobs.py's firing-precision half: the cron jobs, the simulated nodes and the APScheduler peer.

The jobs are 6-field UTC crons: job i fires at second `i % 60` of every minute, and every
fifth job also 30 s later, so 10,000 jobs make 200 fires/s (in bursts of ~200 at each whole
second, as any cron fleet does). A fire's scheduled time is found exactly from the attempt's
run id, which is a hash of (job id, fire time): the job's fire seconds before the arrival are
tried until one hashes to it.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import trio
import trio_websocket

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from runtime.control import messages  # noqa: E402
from runtime.control.job_batches import pack_reports, unpack_attempts  # noqa: E402
from runtime.control.messages import Heartbeat, Hello, JobAttempt, JobAttempts, JobReport  # noqa: E402
from runtime.jobs.store import scheduled_run_id  # noqa: E402
from runtime.tunnel import open_mux  # noqa: E402


def seconds_of(i: int) -> tuple[int, ...]:
    """The seconds of the minute job i fires on."""
    s = i % 60
    return tuple(sorted({s, (s + 30) % 60})) if i % 5 == 0 else (s,)


def job_name(i: int) -> str:
    """Job i's name."""
    return f"j{i:05d}"


def job_toml(i: int, *, suspend: bool = False) -> str:
    """Job i's definition: one `true` step on any node, a short history."""
    cron = ",".join(map(str, seconds_of(i))) + " * * * * *"
    return (f'name = "{job_name(i)}"\n[trigger]\ntype = "cron"\ncron = "{cron}"\ntimezone = "UTC"\n'
            f'[policies]\nhistory = {{ succeeded = 1, failed = 1 }}\nsuspend = {str(suspend).lower()}\n'
            '[[steps]]\nname = "s"\nservice = "bench@1.0.0"\ncommand = ["true"]\n')


def fire_time(i: int, at: float) -> int:
    """The latest fire of job i at or before `at` (whole epoch seconds; UTC minutes are 60 s)."""
    t = math.floor(at)
    secs = seconds_of(i)
    while t % 60 not in secs:
        t -= 1
    return t


def fires_in(jobs: int, start: int, end: int) -> int:
    """How many fires jobs 0..jobs-1 make at seconds in [start, end)."""
    per_second = [0] * 60
    for i in range(jobs):
        for s in seconds_of(i):
            per_second[s] += 1
    return sum(per_second[t % 60] for t in range(start, end))


def exact_fire(i: int, at: float, run_id: str | None, job_id: str | None) -> int | None:
    """The fire time of job i's run `run_id` that arrived at `at` (looking back an hour at most);
    without ids (the in-process peer), the latest fire at or before `at`."""
    t = fire_time(i, at)
    if run_id is None or job_id is None:
        return t
    for _ in range(3600):
        if scheduled_run_id(job_id, t) == run_id:
            return t
        t = fire_time(i, t - 1)
    return None


Arrival = tuple[float, int, str | None]  # when, job index, run id


def lateness(arrivals: list[Arrival], start: int, end: int,
             ids: dict[int, str] | None = None) -> tuple[list[float], int]:
    """Lateness (s) of the arrivals whose fire lies in [start, end), and how many arrived."""
    late = []
    for at, i, run_id in arrivals:
        fired = exact_fire(i, at, run_id, (ids or {}).get(i))
        if fired is not None and start <= fired < end:
            late.append(at - fired)
    return late, len(late)


def percentiles(values: list[float]) -> dict[str, float]:
    """p50 / p99 / max in milliseconds (NaN when empty)."""
    if not values:
        return {"p50_ms": math.nan, "p99_ms": math.nan, "max_ms": math.nan}
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered * 99
    return {"p50_ms": 1000 * statistics.median(ordered), "p99_ms": 1000 * q[98], "max_ms": 1000 * ordered[-1]}


async def sim_node(url: str, token: str, index: int, arrivals: list[Arrival], *, batch: bool = True,
                   task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """One simulated node: hello, heartbeats, and each job_attempt answered `succeeded` at once.
    With `batch` it announces `job_batch` as a node of this version does: the plane then sends the
    attempts of one round in one `job_attempts`, and it answers each message's in one `job_reports`."""
    async with trio_websocket.open_websocket_url(
        url, extra_headers=[("Authorization", f"Bearer {token}")], connect_timeout=60,
    ) as ws, open_mux(ws, opener=True) as mux:
        hello = Hello(node_id=f"sim{index:04d}", name=f"sim-{index:04d}", agent_version="bench",
                      cpu_count=8, ram_mb=32000, features=messages.FEATURES if batch else ())
        await mux.send_control(messages.encode(hello))
        welcome = messages.decode_plane_message(await mux.receive_control())
        assert isinstance(welcome, messages.Welcome), welcome
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_heartbeats, mux, welcome.heartbeat_interval_s)
            batched = batch and messages.JOB_BATCH in welcome.features
            while True:
                message = messages.decode_plane_message(await mux.receive_control())
                if isinstance(message, JobAttempt):
                    attempts = [message]
                elif isinstance(message, JobAttempts):
                    attempts = unpack_attempts(message)[0]
                else:
                    continue
                now = time.time()
                arrivals.extend((now, int(a.job[1:]), a.run_id) for a in attempts)
                reports = [JobReport(a.run_id, a.step, a.attempt, a.epoch, "succeeded", exit_code=0) for a in attempts]
                for reply in pack_reports(reports) if batched else reports:
                    await mux.send_control(messages.encode(reply))


async def _heartbeats(mux: Any, interval: float) -> None:
    seq = 0
    while True:
        seq += 1
        await mux.send_control(messages.encode(Heartbeat(seq=seq, free_ram_mb=16000)))
        await trio.sleep(interval)


def apscheduler_peer(jobs: int, duration: float, warmup: float) -> dict[str, Any]:
    """APScheduler 3.x in this process firing the same crons; lateness when each job function starts."""
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger

    arrivals: list[Arrival] = []
    scheduler = BackgroundScheduler(timezone="UTC", executors={"default": ThreadPoolExecutor(20)},
                                    job_defaults={"misfire_grace_time": 60, "coalesce": False})

    def fire(i: int) -> None:
        arrivals.append((time.time(), i, None))

    for i in range(jobs):
        scheduler.add_job(fire, CronTrigger(second=",".join(map(str, seconds_of(i))), timezone="UTC"),
                          args=[i], id=job_name(i))
    scheduler.start()
    try:
        time.sleep(warmup)
        start = math.ceil(time.time())
        end = start + int(duration)
        import resource

        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        time.sleep(max(0.0, end - time.time()) + 1.0)  # fires of the last second arrive too
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        scheduler.shutdown(wait=False)
    late, got = lateness(arrivals, start, end)
    cpu = (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / (end - start + 1.0)
    return {"expected": fires_in(jobs, start, end), "fired": got, "cpu_pct": 100 * cpu, **percentiles(late)}


if __name__ == "__main__":  # the peer's own process: JOBS DURATION WARMUP -> one JSON line
    print(json.dumps(apscheduler_peer(int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]))), flush=True)
