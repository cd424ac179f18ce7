"""The CLI as a user runs it: a real subprocess, exit codes and output."""

import socket
import subprocess
import sys
import time

import pytest

from tests.hub_store.bundles import make_bundle


def flowctl(*args, **kw):
    return subprocess.run([sys.executable, "-m", "flowctl", *args], capture_output=True, text=True,
                          timeout=60, **kw)


def test_help_lists_commands_and_exits_zero():
    result = flowctl("--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_unknown_command_is_a_usage_error():
    result = flowctl("no-such-command")
    assert result.returncode == 2
    assert "No such command" in result.stderr


def test_version():
    result = flowctl("--version")
    assert result.returncode == 0 and result.stdout.startswith("flowctl ")


@pytest.mark.parametrize("args", [["--help"]])
def test_help_does_not_import_the_server_stack(args):
    code = (
        f"import sys, runpy; sys.argv=['flowctl', *{args!r}]\n"
        "try:\n    runpy.run_module('flowctl', run_name='__main__')\n"
        "except SystemExit: pass\n"
        "heavy = [m for m in ('quart', 'quart_trio', 'hypercorn', 'httpx', 'trio') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr


def _closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("args", [
    ["status"], ["tenants", "ls"], ["keys", "ls"], ["usage"], ["node", "token", "ls"], ["hub", "ls"],
    ["publish", "BUNDLE"],
])
def test_listing_commands_import_no_server_stack(args, tmp_path):
    # Run for real against a closed port: the command imports all it needs, then fails in one line.
    nowhere = f"http://127.0.0.1:{_closed_port()}"
    if args[0] in ("hub", "publish"):
        args = [a if a != "BUNDLE" else str(make_bundle(tmp_path).path) for a in args]
        args += ["--hub", nowhere]
    else:
        args += ["--server", nowhere]
    code = (
        f"import sys, runpy; sys.argv=['flowctl', *{args!r}]\n"
        "try:\n    runpy.run_module('flowctl', run_name='__main__')\n"
        "except SystemExit as exc: print('EXIT', exc.code)\n"
        "heavy = [m for m in ('quart', 'quart_trio', 'hypercorn', 'runtime.hub', 'runtime.gateway')\n"
        "         if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "EXIT 1" in result.stdout and "unreachable" in result.stderr, result.stdout + result.stderr
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr


def test_help_starts_fast():
    # Not a benchmark: a generous bound that catches an accidental eager import of the server stack
    # (which alone costs ~0.55 s here). The real figure is in bench/startup.py.
    best = min(_timed("--help") for _ in range(3))
    assert best < 1.5, best


def _timed(*args):
    start = time.perf_counter()
    flowctl(*args)
    return time.perf_counter() - start
