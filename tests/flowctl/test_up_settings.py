"""`flowctl up` and `flowctl serve` hand the session settings to the control plane they start."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

import runtime.plane
from flowctl.app import app
from flowctl.config import SETTINGS


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
    for setting in SETTINGS.values():
        for name in (setting.env, *setting.aliases):
            if name not in ("FLOWCTL_CONFIG", "FLOWCTL_DATA_DIR"):
                monkeypatch.delenv(name, raising=False)
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


COMMANDS = [["up", "--port", str(free_port()), "--no-node"],
            ["serve", "--roles", "hub,scheduler,gateway", "--port", "0"]]
FLAGS = ["--max-sessions", "10", "--session-timeout", "60", "--public-ws-url", "wss://tutor.example/",
         "--trusted-proxy", "10.0.0.0/8", "--trusted-proxies", "127.0.0.1", "--first-byte-timeout", "30",
         "--reply-idle-timeout", "45", "--body-timeout", "9", "--heartbeat-interval", "2", "--lost-after", "8"]


def _plane(settings):
    return (settings.extra["sessions"], settings.extra["gateway"], settings.heartbeat_interval, settings.lost_after)


@pytest.mark.parametrize("command", COMMANDS)
def test_plane_settings_by_flag_reach_the_plane(plane_settings, tmp_path, command):
    result = CliRunner().invoke(app, [*command, "--data-dir", str(tmp_path / "data"), *FLAGS])
    assert plane_settings, result.output
    sessions, gateway, heartbeat, lost_after = _plane(plane_settings[0])
    assert sessions == {"max_sessions": 10, "idle_timeout": 60.0, "public_ws_url": "wss://tutor.example",
                        "trusted_proxies": ("10.0.0.0/8", "127.0.0.1/32")}
    assert gateway == {"first_byte_timeout": 30.0, "idle_timeout": 45.0, "body_timeout": 9.0}
    assert (heartbeat, lost_after) == (2.0, 8.0)


@pytest.mark.parametrize("command", COMMANDS)
def test_seed_variables_and_the_config_file_reach_the_plane(plane_settings, tmp_path, monkeypatch, command):
    config = tmp_path / "config.toml"
    config.write_text("lost_after = 30\nheartbeat_interval = 3\nbody_timeout = 5\n")
    monkeypatch.setenv("FLOWCTL_CONFIG", str(config))
    monkeypatch.setenv("MAX_SESSIONS", "10")  # seed 002's .env, unchanged
    monkeypatch.setenv("SESSION_TIMEOUT_SECONDS", "120")
    monkeypatch.setenv("WEBSOCKET_URL", "ws://seed.example:9001")
    monkeypatch.setenv("FLOWCTL_TRUSTED_PROXIES", "192.168.1.0/24")
    result = CliRunner().invoke(app, [*command, "--data-dir", str(tmp_path / "data")])
    assert plane_settings, result.output
    sessions, gateway, heartbeat, lost_after = _plane(plane_settings[0])
    assert sessions == {"max_sessions": 10, "idle_timeout": 120.0, "public_ws_url": "ws://seed.example:9001",
                        "trusted_proxies": ("192.168.1.0/24",)}
    assert gateway == {"body_timeout": 5.0}
    assert (heartbeat, lost_after) == (3.0, 30.0)


@pytest.mark.parametrize("command", COMMANDS)
def test_unset_plane_settings_keep_the_defaults(plane_settings, tmp_path, command):
    result = CliRunner().invoke(app, [*command, "--data-dir", str(tmp_path / "data")])
    assert plane_settings, result.output
    assert _plane(plane_settings[0]) == ({}, {}, 5.0, 15.0)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("args", "message"), [
    (["--max-sessions", "0"], "max_sessions must be a whole number from 1"),
    (["--public-ws-url", "http://x"], "public_ws_url must be a ws:// or wss:// URL"),
    (["--trusted-proxy", "everyone"], "'everyone' is not an IP address or CIDR"),
    (["--session-timeout", "-1"], "session_timeout must be a number of seconds above 0"),
    (["--heartbeat-interval", "10", "--lost-after", "5"], "lost_after (5 s) must be longer than heartbeat_interval"),
])
def test_a_bad_plane_setting_is_one_line_and_nothing_starts(plane_settings, tmp_path, command, args, message):
    result = CliRunner().invoke(app, [*command, "--data-dir", str(tmp_path / "data"), *args])
    assert result.exit_code == 1 and not plane_settings, result.output
    assert message in str(result.exception)


@pytest.mark.parametrize("command", COMMANDS)
def test_the_seed_named_flags_and_a_comma_list_of_proxies(plane_settings, tmp_path, command):
    result = CliRunner().invoke(app, [*command, "--data-dir", str(tmp_path / "data"), "--session-timeout-seconds", "90",
                                      "--websocket-url", "ws://seed.example:9001", "--trusted-proxy",
                                      "10.0.0.0/8, 192.168.0.1"])
    assert plane_settings, result.output
    sessions = plane_settings[0].extra["sessions"]
    assert (sessions["idle_timeout"], sessions["public_ws_url"], sessions["trusted_proxies"]) == (
        90.0, "ws://seed.example:9001", ("10.0.0.0/8", "192.168.0.1/32"))
