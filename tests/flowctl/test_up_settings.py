"""`flowctl up` and `flowctl serve` hand the session settings to the control plane they start."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

import runtime.plane
from flowctl.app import app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Started(Exception):
    """Raised by the stand-in plane once it has the settings."""


@pytest.fixture
def plane_settings(monkeypatch, tmp_path):
    seen = []

    async def fake_plane(settings, *, task_status, **_):
        seen.append(settings)
        raise Started

    monkeypatch.setattr(runtime.plane, "serve_control_plane", fake_plane)
    monkeypatch.setenv("FLOWCTL_CONFIG", str(tmp_path / "missing.toml"))
    monkeypatch.delenv("FLOWCTL_DEFAULT_MODEL", raising=False)
    monkeypatch.delenv("FLOWCTL_ANONYMOUS_TENANT", raising=False)
    return seen


@pytest.mark.parametrize("command", [["up", "--port", str(free_port()), "--no-node"],
                                     ["serve", "--roles", "hub,scheduler,gateway", "--port", "0"]])
def test_default_model_reaches_the_session_settings(plane_settings, tmp_path, monkeypatch, command):
    args = [*command, "--data-dir", str(tmp_path / "data")]
    CliRunner().invoke(app, [*args, "--default-model", "gemma3-270m"])
    monkeypatch.setenv("FLOWCTL_DEFAULT_MODEL", "from-env")
    CliRunner().invoke(app, args)
    monkeypatch.delenv("FLOWCTL_DEFAULT_MODEL")
    CliRunner().invoke(app, args)
    assert [s.extra["sessions"] for s in plane_settings] == [
        {"default_model": "gemma3-270m"}, {"default_model": "from-env"}, {}]


@pytest.mark.parametrize("command", [["up", "--port", str(free_port()), "--no-node"],
                                     ["serve", "--roles", "hub,scheduler,gateway", "--port", "0"]])
def test_anonymous_tenant_reaches_the_gateway_settings(plane_settings, tmp_path, monkeypatch, command):
    args = [*command, "--data-dir", str(tmp_path / "data")]
    CliRunner().invoke(app, [*args, "--anonymous-tenant", "seed"])
    monkeypatch.setenv("FLOWCTL_ANONYMOUS_TENANT", "from-env")
    CliRunner().invoke(app, args)
    monkeypatch.delenv("FLOWCTL_ANONYMOUS_TENANT")
    CliRunner().invoke(app, args)
    assert [s.extra["gateway"] for s in plane_settings] == [{"anonymous_tenant": "seed"},
                                                            {"anonymous_tenant": "from-env"}, {}]
