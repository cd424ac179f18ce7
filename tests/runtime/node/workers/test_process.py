"""run_worker against real child processes: a tiny http.server script in tmp_path."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest
import trio

from packer.manifest import HealthCheck
from runtime.node.workers.errors import WorkerExited, WorkerStartFailed, WorkerUnhealthy
from runtime.node.workers.health import probe
from runtime.node.workers.process import WorkerHandle, WorkerSpec, free_port, run_worker
from tests.polling import wait_until

TIMEOUT = 15

# The "service". Its first argument picks a misbehaviour; it writes its env and pid
# to env.json in its cwd (the service dir) before serving /health on FLOWCTL_PORT.
SERVICE = r'''
import json, os, signal, subprocess, sys, threading, time
from http.server import BaseHTTPRequestHandler, HTTPServer

mode = sys.argv[1] if len(sys.argv) > 1 else "ok"
keys = ["FLOWCTL_PORT", "MODELS_DIR", "FLOWCTL_SERVICE_DIR", "FLOWCTL_SERVICE_ID",
        "FLOWCTL_SERVICE_VERSION", "EXTRA", "PYTHONUNBUFFERED"]
info = {k: os.environ.get(k) for k in keys}
info.update(cwd=os.getcwd(), pid=os.getpid(), argv=sys.argv, executable=sys.executable)
with open("env.json.tmp", "w") as f:
    json.dump(info, f)
os.replace("env.json.tmp", "env.json")
print(f"service {mode} pid {os.getpid()}")

if mode == "exit3":
    print("config is broken", file=sys.stderr)
    sys.exit(3)
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, lambda *a: print("ignoring SIGTERM"))
else:
    def on_term(*a):
        print("got SIGTERM, bye")
        os._exit(0)
    signal.signal(signal.SIGTERM, on_term)
if mode == "grandchild":
    kid = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
    with open("grandchild.pid", "w") as f:
        f.write(str(kid.pid))
if mode == "crash-then-exit3":
    if os.path.exists("ran"):
        print("second run: config is broken")
        sys.exit(3)
    open("ran", "w").close()
    mode = "crash-after=0.3"
crash_timer = None
if mode == "escapee":  # leaves the process group but keeps the log pipe open
    kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                           start_new_session=True)
    with open("grandchild.pid", "w") as f:
        f.write(str(kid.pid))
if mode.startswith("crash-after="):  # counted from the first health answer
    crash_timer = threading.Timer(float(mode.split("=")[1]), lambda: os._exit(5))
if mode == "chatty":
    for i in range(2000):
        print(f"line {i:05d} " + "x" * 90)

class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        sick = mode == "never-healthy" or os.path.exists("sick")
        self.send_response(503 if sick else 200)
        self.end_headers()
        self.wfile.write(b"ok")
        if crash_timer and not crash_timer.is_alive():
            crash_timer.start()
    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(os.environ["FLOWCTL_PORT"])), Health).serve_forever()
'''


def live_children() -> list[int]:
    """Pids of this process's children that still run."""
    mine = str(os.getpid()).encode()
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read_stat(int(name))
            if stat and stat[1] == mine and stat[0] not in (b"Z", b"X"):
                found.append(int(name))
    return found


def read_stat(pid: int) -> list[bytes]:
    """/proc/PID/stat's fields after the command name (state, ppid, pgrp, ...), [] if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return stat[stat.rfind(b")") + 2:].split()


@pytest.fixture(autouse=True)
def no_child_outlives_its_test():
    # Session-scoped engines (tests/engines: PostgreSQL, moto) are children of the test run
    # for its whole length: only what this test started must be gone by its end.
    before = set(live_children())
    yield
    assert [pid for pid in live_children() if pid not in before] == []


def make_spec(tmp_path: Path, mode: str = "ok", *, timeout_s: float = 10.0, grace_s: float = 0.5,
              **kw) -> WorkerSpec:
    """A WorkerSpec running SERVICE in tmp_path/svc/1.0.0 with the given mode."""
    service_dir = tmp_path / "svc" / "1.0.0"
    service_dir.mkdir(parents=True, exist_ok=True)
    (service_dir / "service.py").write_text(SERVICE)
    fields = dict(service_id="svc", version="1.0.0", service_dir=service_dir,
                  command=f"python service.py {mode}", port=free_port(),
                  log_path=tmp_path / "logs" / "svc.log",
                  health=HealthCheck("/health", "GET", timeout_s), grace_s=grace_s)
    fields.update(kw)
    return WorkerSpec(**fields)


def pid_gone(pid: int) -> bool:
    """True when `pid` no longer runs; a zombie waiting for init to reap it counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return read_stat(pid)[:1] in ([], [b"Z"], [b"X"])


async def assert_gone(*pids: int, within: float = 5.0) -> None:
    """Poll until every pid is gone; fail naming the survivors."""
    with trio.move_on_after(within):
        await wait_until(lambda: all(pid_gone(p) for p in pids))
    survivors = [p for p in pids if not pid_gone(p)]
    for pid in survivors:  # don't leak them into other tests
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"processes survived: {survivors}"


def read_nonempty(path: Path) -> str:
    """The file's text, or '' while it does not exist yet."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


async def wait_for_file(path: Path) -> str:
    """Poll until `path` exists and has content (another process writes it)."""
    await wait_until(lambda: read_nonempty(path))
    return read_nonempty(path)


def log_text(spec: WorkerSpec) -> str:
    return spec.log_path.read_text() if spec.log_path.exists() else ""


def check_env(info: dict, spec: WorkerSpec) -> None:
    assert info["FLOWCTL_PORT"] == str(spec.port)
    assert info["MODELS_DIR"] == str(spec.service_dir / "models")
    assert info["FLOWCTL_SERVICE_DIR"] == str(spec.service_dir)
    assert info["FLOWCTL_SERVICE_VERSION"] == "1.0.0"
    assert info["FLOWCTL_SERVICE_ID"] == "override"  # spec.env has the last word
    assert info["EXTRA"] == "yes"
    assert info["PYTHONUNBUFFERED"] == "1"
    assert Path(info["cwd"]).resolve() == spec.service_dir.resolve()
    assert info["executable"] == sys.executable  # `python` became spec.python
    assert info["argv"] == ["service.py", "ok"]


async def test_healthy_start_reports_handle_and_env(tmp_path):
    spec = make_spec(tmp_path, env={"EXTRA": "yes", "FLOWCTL_SERVICE_ID": "override"})
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(run_worker, spec)
            assert isinstance(handle, WorkerHandle)
            assert (handle.port, handle.service_id, handle.version) == (spec.port, "svc", "1.0.0")
            assert handle.url == f"http://127.0.0.1:{spec.port}"
            assert (await probe(spec.port, spec.health)).healthy
            info = json.loads(await wait_for_file(spec.service_dir / "env.json"))
            nursery.cancel_scope.cancel()
        await assert_gone(handle.pid)
    assert info["pid"] == handle.pid
    check_env(info, spec)
    text = log_text(spec)
    assert "service ok pid" in text and "ready: pid" in text


async def test_exit_before_healthy_raises_with_code_and_tail(tmp_path):
    spec = make_spec(tmp_path, "exit3")
    with trio.fail_after(TIMEOUT):
        with pytest.raises(WorkerStartFailed) as caught:
            await run_worker(spec)
        info = json.loads(await wait_for_file(spec.service_dir / "env.json"))
        await assert_gone(info["pid"])
    error = caught.value
    assert error.code == 3 and error.reason == "exited with code 3"
    assert (error.service_id, error.version) == ("svc", "1.0.0")
    assert "config is broken" in error.log_tail
    assert "svc@1.0.0: failed to start: exited with code 3" in str(error)
    assert "config is broken" in log_text(spec)


async def test_health_timeout_stops_the_worker(tmp_path):
    spec = make_spec(tmp_path, "never-healthy", timeout_s=0.6)
    with trio.fail_after(TIMEOUT):
        with pytest.raises(WorkerStartFailed) as caught:
            await run_worker(spec)
        info = json.loads(await wait_for_file(spec.service_dir / "env.json"))
        await assert_gone(info["pid"])
    error = caught.value
    assert error.code is None
    assert error.reason.startswith("not healthy after 0.6 s")
    assert "HTTP 503" in error.reason or "refused" in error.reason
    assert any("got SIGTERM" in line for line in error.log_tail)


async def test_missing_executable_is_a_start_failure(tmp_path):
    spec = make_spec(tmp_path, command="./no-such-binary --flag")
    with trio.fail_after(TIMEOUT):
        with pytest.raises(WorkerStartFailed) as caught:
            await run_worker(spec)
    assert "cannot run './no-such-binary'" in caught.value.reason
    assert "no-such-binary" in log_text(spec)


async def test_port_in_use_is_a_start_failure(tmp_path):
    spec = make_spec(tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", spec.port))
        holder.listen()
        with trio.fail_after(TIMEOUT):
            with pytest.raises(WorkerStartFailed) as caught:
                await run_worker(spec)
    assert caught.value.reason == f"port {spec.port} is already in use"
    assert not (spec.service_dir / "env.json").exists()  # nothing was started


async def test_cancel_sends_sigterm_and_keeps_last_words(tmp_path):
    spec = make_spec(tmp_path, grace_s=5.0)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(run_worker, spec)
            nursery.cancel_scope.cancel()
        await assert_gone(handle.pid, within=0.5)  # well within the 5 s grace: SIGTERM did it
    text = log_text(spec)
    assert "got SIGTERM, bye" in text
    assert "exited with code 0" in text


async def test_sigterm_ignored_is_killed_after_grace(tmp_path):
    spec = make_spec(tmp_path, "ignore-term", grace_s=0.5)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(run_worker, spec)
            nursery.cancel_scope.cancel()
            started = trio.current_time()
        elapsed = trio.current_time() - started
        await assert_gone(handle.pid, within=0.1)
    assert 0.5 <= elapsed < 3.0
    text = log_text(spec)
    assert "ignoring SIGTERM" in text and "killed by SIGKILL" in text


async def test_grandchild_dies_with_the_worker(tmp_path):
    spec = make_spec(tmp_path, "grandchild", grace_s=0.3)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(run_worker, spec)
            grandchild = int(await wait_for_file(spec.service_dir / "grandchild.pid"))
            assert not pid_gone(grandchild)
            nursery.cancel_scope.cancel()
        # The worker exits on SIGTERM at once; its child ignores SIGTERM and needs SIGKILL.
        await assert_gone(handle.pid, grandchild, within=0.2)


async def test_a_process_that_left_the_group_cannot_hold_up_the_stop(tmp_path):
    spec = make_spec(tmp_path, "escapee", grace_s=0.3)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(lambda task_status: run_worker(
                spec, task_status=task_status, drain_s=0.3))
            escapee = int(await wait_for_file(spec.service_dir / "grandchild.pid"))
            nursery.cancel_scope.cancel()
            cancelled_at = trio.current_time()
        # The escapee keeps the pipe open: the log drain gives up after drain_s.
        assert trio.current_time() - cancelled_at < 2.0
        await assert_gone(handle.pid)
        assert not pid_gone(escapee)  # beyond a process group's reach: a known limit
        os.kill(escapee, signal.SIGKILL)
        await assert_gone(escapee)
    assert "got SIGTERM, bye" in log_text(spec)


async def test_grandchild_of_a_crashed_worker_is_stopped(tmp_path):
    spec = make_spec(tmp_path, "grandchild", grace_s=0.3)
    pids: list[int] = []

    class Status:
        def started(self, handle):
            # The service writes grandchild.pid before it serves /health.
            pids.extend([handle.pid, int((spec.service_dir / "grandchild.pid").read_text())])
            os.kill(handle.pid, signal.SIGKILL)

    with trio.fail_after(TIMEOUT):
        with pytest.raises(WorkerExited) as caught:
            await run_worker(spec, task_status=Status())
        # The orphan ignores SIGTERM: it is SIGKILLed after the grace period.
        await assert_gone(*pids, within=0.2)
    assert caught.value.code == -signal.SIGKILL
    assert caught.value.reason == "killed by SIGKILL"


async def test_exit_after_ready_raises_worker_exited(tmp_path):
    spec = make_spec(tmp_path, "crash-after=0.3")
    with trio.fail_after(TIMEOUT):
        handles: list[WorkerHandle] = []

        class Status:
            def started(self, value):
                handles.append(value)

        with pytest.raises(WorkerExited) as caught:
            await run_worker(spec, task_status=Status())
        await assert_gone(handles[0].pid)
    assert caught.value.code == 5
    assert any("service crash-after" in line for line in caught.value.log_tail)


async def test_liveness_failures_stop_the_worker(tmp_path):
    spec = make_spec(tmp_path)
    with trio.fail_after(TIMEOUT):
        handles: list[WorkerHandle] = []

        class Status:
            def started(self, value):
                handles.append(value)
                (spec.service_dir / "sick").write_text("1")

        with pytest.raises(WorkerUnhealthy) as caught:
            await run_worker(spec, task_status=Status(), liveness_interval_s=0.05,
                             liveness_failures=3)
        await assert_gone(handles[0].pid)
    error = caught.value
    assert error.failures == 3 and error.detail == "HTTP 503"
    assert error.code == 0  # it exited on our SIGTERM
    assert "failed 3 health probes in a row (last: HTTP 503)" in str(error)


async def test_log_rotation_bounds_the_files(tmp_path):
    spec = make_spec(tmp_path, "chatty", max_log_bytes=20_000, log_backups=3)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(run_worker, spec)
            nursery.cancel_scope.cancel()
        await assert_gone(handle.pid)
    logs = sorted(p.name for p in spec.log_path.parent.iterdir())
    assert logs == ["svc.log", "svc.log.1", "svc.log.2", "svc.log.3"]
    for name in logs:
        size = (spec.log_path.parent / name).stat().st_size
        assert 0 < size <= 20_000
    assert "line 01999" in "".join((spec.log_path.parent / n).read_text() for n in logs)


def test_spec_validates_and_builds_argv(tmp_path):
    spec = make_spec(tmp_path, command="python3 -m http.server 'a b'", python=Path("/venv/py"))
    assert spec.argv() == ["/venv/py", "-m", "http.server", "a b"]
    assert make_spec(tmp_path, command="./serve --x").argv() == ["./serve", "--x"]
    env = spec.child_env({"PATH": "/bin", "LC_ALL": "C", "FLOWCTL_TOKEN": "t", "FLOWCTL_HOST": "0.0.0.0",
                          "SECRET": "s"})
    assert env["PATH"] == "/bin" and env["LC_ALL"] == "C" and env["FLOWCTL_PORT"] == str(spec.port)
    assert env["FLOWCTL_HOST"] == "127.0.0.1"  # where the node probes it, whatever the node's own env says
    assert "FLOWCTL_TOKEN" not in env and "SECRET" not in env
    assert "SECRET" in make_spec(tmp_path, passthrough=("SECRET",)).child_env({"SECRET": "s"})
    for bad in ({"command": "  "}, {"port": 0}, {"grace_s": -1}, {"passthrough": ("FLOWCTL_*",)}):
        with pytest.raises(ValueError):
            make_spec(tmp_path, **bad)
    with pytest.raises(TypeError):
        spec.env["X"] = "1"  # type: ignore[index]
    assert hash(spec) == hash(spec)


def test_free_port_is_bindable():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_a_worker_sees_only_the_gpus_it_was_given(tmp_path):
    node = {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    given = make_spec(tmp_path, gpus=(2, 3), env={"CUDA_VISIBLE_DEVICES": "0"}).child_env(node)
    assert given["CUDA_VISIBLE_DEVICES"] == "2,3" and given["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert make_spec(tmp_path, gpus=()).child_env(node)["CUDA_VISIBLE_DEVICES"] == ""  # none visible
    assert make_spec(tmp_path).child_env(node)["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"  # not placed by a plane
