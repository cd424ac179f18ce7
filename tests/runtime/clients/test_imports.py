"""The clients stand apart from the servers: importing them loads no server stack."""

import subprocess
import sys

import pytest

import runtime.clients

SERVER_STACK = ("quart", "quart_trio", "hypercorn", "runtime.hub", "runtime.gateway",
                "runtime.scheduler", "runtime.http", "runtime.node")


def test_every_public_name_exists():
    for name in runtime.clients.__all__:
        assert getattr(runtime.clients, name) is not None


@pytest.mark.parametrize(("modules", "absent"), [
    ("runtime.clients.cluster, runtime.clients.gateway, runtime.clients.hub", SERVER_STACK),
    # The control plane's clients do not pay for the hub's identifiers either.
    ("runtime.clients.cluster, runtime.clients.gateway", (*SERVER_STACK, "hub_store", "packer")),
    # Nor for httpx, whose httpcore imports Trio and anyio: about half of `flowctl status`.
    ("runtime.clients.cluster, runtime.clients.gateway", ("httpx", "httpcore", "trio", "anyio")),
])
def test_importing_the_clients_loads_no_server_module(modules, absent):
    code = (
        f"import sys\nimport {modules}\n"
        "loaded = [m for m in sys.modules\n"
        f"          if any(m == p or m.startswith(p + '.') for p in {absent!r})]\n"
        "print('LOADED', sorted(loaded))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "LOADED []" in result.stdout, result.stdout + result.stderr
