"""--redis on `flowctl serve` and `flowctl up`, FLOWCTL_REDIS and the config file's `redis` (issue 18)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from flowctl.commands.up import gateway_settings
from flowctl.config import load_config
from flowctl.errors import CliError


def run(*args, env=None, cwd=None):
    full = {**os.environ, "FLOWCTL_CONFIG": "/nonexistent/flowctl.toml", **(env or {})}
    return subprocess.run([sys.executable, "-m", "flowctl", *args], capture_output=True, text=True, env=full,
                          cwd=cwd, timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("command", ["serve", "up"])
def test_help_names_the_flag_its_variable_and_key(command):
    done = run(command, "--help", env={"COLUMNS": "200"})
    assert done.returncode == 0
    assert "--redis" in done.stdout and "FLOWCTL_REDIS" in done.stdout and "config redis" in done.stdout


@pytest.mark.parametrize(("args", "env", "where"), [
    (["serve", "--redis", "http://u:s3cret@cache:6379"], {}, "command-line flag"),
    (["up"], {"FLOWCTL_REDIS": "cache:6379"}, "FLOWCTL_REDIS"),
])
def test_a_url_that_is_not_redis_is_one_line_and_nothing_starts(tmp_path, args, env, where):
    done = run(*args, "--data-dir", str(tmp_path / "data"), env=env)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and where in done.stderr
    assert "must be a redis:// or rediss:// URL" in done.stderr and "s3cret" not in done.stderr
    assert not (tmp_path / "data").exists()


def test_the_config_file_sets_it_and_the_flag_wins(tmp_path):
    config = tmp_path / "flowctl.toml"
    config.write_text('redis = "redis://cache.internal:6379/2"\n')
    env = {"FLOWCTL_CONFIG": str(config)}
    assert load_config(environ=env).redis == "redis://cache.internal:6379/2"
    assert gateway_settings(load_config(environ=env))["redis"] == "redis://cache.internal:6379/2"
    assert load_config(environ=env, redis="redis://other:6379").redis == "redis://other:6379"
    assert "redis" not in gateway_settings(load_config(environ={"FLOWCTL_CONFIG": str(tmp_path / "none")}))
    config.write_text("redis = 6379\n")
    with pytest.raises(CliError, match="redis must be a string"):
        load_config(environ=env)
