"""Start an example worker as a real subprocess and stop it: shared by the example tests."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
READY_MARKER = " listening on "


class WorkerFailed(Exception):
    """The worker exited or stayed silent before it printed its listening line."""


@dataclass
class Worker:
    """A running worker process and where it listens."""

    proc: subprocess.Popen[bytes]
    stderr: IO[bytes]
    url: str = ""
    started_in: float = field(default=0.0)

    _stderr_tail: str | None = None

    def stderr_text(self) -> str:
        """The last 2000 characters the worker wrote to stderr (also after `stop`)."""
        if self._stderr_tail is not None:
            return self._stderr_tail
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-2000:]

    def stop(self, *, grace: float = 10.0) -> int:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL; always reaps. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if not self.stderr.closed:
            self._stderr_tail = self.stderr_text()
            self.stderr.close()
        return self.proc.returncode


def spawn_worker(directory: Path, *, env: dict[str, str] | None = None,
                 timeout: float = 30.0) -> Worker:
    """Run `python worker.py` in `directory` (port 0 unless env says) and wait until it listens."""
    full_env = {**os.environ, "FLOWCTL_PORT": "0", "PYTHONUNBUFFERED": "1", **(env or {})}
    # stderr goes to an unlinked temp file: a pipe nobody reads could fill and stall the worker.
    stderr = tempfile.TemporaryFile()
    began = time.monotonic()
    proc = subprocess.Popen([sys.executable, "worker.py"], cwd=directory, env=full_env,
                            stdout=subprocess.PIPE, stderr=stderr)
    worker = Worker(proc, stderr)
    try:
        worker.url = _read_ready_line(worker, timeout)
    except BaseException:
        worker.stop()
        raise
    worker.started_in = time.monotonic() - began
    return worker


def _read_ready_line(worker: Worker, timeout: float) -> str:
    stdout = worker.proc.stdout
    assert stdout is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerFailed(f"no listening line within {timeout} s")
            if selector.select(left):
                chunk = os.read(stdout.fileno(), 4096)
                if not chunk:
                    raise WorkerFailed(f"worker exited ({worker.proc.wait()}): "
                                       f"{worker.stderr_text()}")
                buffer += chunk
    line = buffer.split(b"\n", 1)[0].decode()
    if READY_MARKER not in line:
        raise WorkerFailed(f"unexpected first line {line!r}")
    return line.split(READY_MARKER, 1)[1].split()[0]


async def sse_data(lines) -> list:
    """The `data:` payloads of an SSE stream: parsed JSON objects, then the final "[DONE]"."""
    import json

    events: list = []
    async for line in lines:
        if line.startswith("data: "):
            payload = line[len("data: "):]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


async def wait_for_health(client, predicate, *, deadline_s: float = 5.0, interval_s: float = 0.01):
    """Poll GET /health until `predicate(body)` holds; return that body."""
    import trio

    with trio.fail_after(deadline_s):
        while True:
            body = (await client.get("/health")).json()
            if predicate(body):
                return body
            await trio.sleep(interval_s)
