"""A real redis-server per test: 127.0.0.1, a free port, no persistence, a temp dir.

`redis_server` is the running server (`stop()` and `start()` again on the same port: a restart
under load); `redis_url` is its URL. Without /usr/bin/redis-server (or `redis-server` on PATH)
the test is skipped, naming it (`.ci/system-deps` installs it).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT = 10.0


def _binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    return "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server child process; the same port across restarts."""

    def __init__(self, binary: str, directory: Path, *, args: tuple[str, ...] = ()) -> None:
        self.binary = binary
        self.directory = directory
        self.args = args  # more redis-server options (e.g. --requirepass)
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "redis.log"

    def start(self) -> None:
        """Start the server and wait until it answers PING (a restart keeps nothing: no persistence)."""
        assert self.process is None, "already running"
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), "--logfile", str(self.log), "--daemonize", "no",
             "--protected-mode", "yes", *self.args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith((b"+PONG", b"-NOAUTH")):  # answering, with or without a password
                        return
            except OSError:
                pass
            time.sleep(0.02)  # a child process starting: nothing to wait on but the socket
        self.stop()
        log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        raise RuntimeError(f"redis-server did not start on port {self.port}: {log}")

    def stop(self) -> None:
        """Kill the server (SIGKILL: what a crash looks like) and reap it."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None


def redis_binary() -> str:
    """The redis-server to run, or skip the test naming what is missing."""
    binary = _binary()
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server, or .ci/system-deps)")
    return binary


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A running redis-server of this test alone (skipped, naming redis-server, when it is not installed)."""
    server = RedisServer(redis_binary(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of this test's redis-server (redis://127.0.0.1:PORT/0)."""
    return redis_server.url
