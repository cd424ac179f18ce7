"""`flowctl jobs runs show RUN`: one run with its steps, attempts, broadcast shards and artifacts."""

from __future__ import annotations

import time
from typing import Any


def _when(t: float | None) -> str:
    return "" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def print_run(run: dict[str, Any]) -> None:
    """The run detail the API gives (GET /api/v1/runs/{id}), for a person."""
    from flowctl.console import echo, printable

    echo(f"run        {run['run_id']}  {printable(run['tenant'])}/{printable(run['job_name'])}  {run['state']}"
         + (f": {printable(run['reason'])}" if run.get("reason") else ""))
    echo(f"due        {_when(run['due_at'])}  started {_when(run.get('started_at'))}  "
         f"finished {_when(run.get('finished_at'))}  ({run['cause']})")
    for step in run.get("steps", []):
        echo(f"  step     {printable(step['step'])}  {step['state']}"
             + (f": {printable(step['reason'])}" if step.get("reason") else ""))
        for a in step.get("attempts", []):
            echo(f"    attempt {a['attempt']}  {a['state']}  node {printable(a.get('node') or '-')}"
                 + (f"  exit {a['exit_code']}" if a.get("exit_code") is not None else "")
                 + (f"  {printable(a['reason'])}" if a.get("reason") else ""))
        for s in step.get("shards", []):
            echo(f"    shard   {s['shard']}/{s['total']}  attempt {s['attempt']}  {s['state']}  "
                 f"node {printable(s.get('node') or '-')}" + (f"  {printable(s['reason'])}" if s.get("reason") else ""))
        for f in step.get("artifacts", []):
            echo(f"    artifact {printable(f['path'])}  {f['size']} bytes  attempt {f['attempt']}  "
                 f"sha256 {f['sha256'][:12]}")
