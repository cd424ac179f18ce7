"""Settings precedence (flag > env > file > default) and one-line errors for bad config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flowctl.config import (
    SETTINGS,
    Config,
    config_path,
    default_data_dir,
    load_config,
    load_file,
    resolve,
)
from flowctl.errors import CliError

ENV_VARS = ("FLOWCTL_CONFIG", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "FLOWCTL_HUB_URL",
            "FLOWCTL_TOKEN", "FLOWCTL_DATA_DIR", "FLOWCTL_TRUSTED_KEYS", "FLOWCTL_WORKER_ENV_PASSTHROUGH",
            "FLOWCTL_DEFAULT_MODEL", "FLOWCTL_ANONYMOUS_TENANT",
            *(name for s in SETTINGS.values() for name in (s.env, *s.aliases)))


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean HOME and no flowctl variables, so the developer's own config never leaks in."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return home


def write_config(home: Path, text: str) -> Path:
    path = home / ".config" / "flowctl" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_without_file(home: Path) -> None:
    config = load_config()
    assert config == Config(hub_url=None, token=None,
                            data_dir=home / ".local" / "share" / "flowctl",
                            trusted_keys=(), sources=config.sources)
    assert set(config.sources.values()) == {"default"}


def test_config_path_honours_xdg_and_override(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert config_path() == home / ".config" / "flowctl" / "config.toml"
    monkeypatch.setenv("XDG_CONFIG_HOME", "/etc/xdg-test")
    assert config_path() == Path("/etc/xdg-test/flowctl/config.toml")
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")  # the XDG spec says ignore
    assert config_path() == home / ".config" / "flowctl" / "config.toml"
    monkeypatch.setenv("FLOWCTL_CONFIG", "~/my.toml")
    assert config_path() == home / "my.toml"
    monkeypatch.setenv("XDG_DATA_HOME", "/data")
    assert default_data_dir() == Path("/data/flowctl")


def test_precedence_flag_over_env_over_file(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(home, 'hub_url = "http://file:5000"\ntoken = "file-token"\n')
    assert resolve("hub_url") == "http://file:5000"
    monkeypatch.setenv("FLOWCTL_HUB_URL", "http://env:5000/")
    assert resolve("hub_url") == "http://env:5000"  # trailing slash dropped
    assert resolve("hub_url", "https://flag") == "https://flag"
    config = load_config(token="flag-token")
    assert (config.hub_url, config.token) == ("http://env:5000", "flag-token")
    assert config.sources["hub_url"] == "FLOWCTL_HUB_URL"
    assert config.sources["token"] == "flag"
    monkeypatch.delenv("FLOWCTL_HUB_URL")
    assert load_config().sources["hub_url"] == str(path)


def test_empty_env_var_counts_as_unset(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(home, 'token = "file-token"\n')
    monkeypatch.setenv("FLOWCTL_TOKEN", "")
    assert resolve("token") == "file-token"


def test_resolve_with_explicit_env_and_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve("token", env="OTHER_TOKEN", default="d") == "d"
    monkeypatch.setenv("OTHER_TOKEN", "o")
    assert resolve("token", env="OTHER_TOKEN", default="d") == "o"
    with pytest.raises(ValueError, match="unknown setting"):
        resolve("no_such_setting")


def test_paths(home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write_config(home, 'data_dir = "state"\ntrusted_keys = ["~/a.pub", "/k/b.pub"]\n')
    config = load_config()
    assert config.data_dir == path.parent / "state"  # relative to the file
    assert config.trusted_keys == (home / "a.pub", Path("/k/b.pub"))
    monkeypatch.setenv("FLOWCTL_TRUSTED_KEYS", "/x.pub:/y.pub")
    monkeypatch.setenv("FLOWCTL_DATA_DIR", "~/d")
    config = load_config()
    assert config.trusted_keys == (Path("/x.pub"), Path("/y.pub"))
    assert config.data_dir == home / "d"
    flagged = load_config(trusted_keys=["/z.pub"], data_dir="/abs")
    assert (flagged.trusted_keys, flagged.data_dir) == ((Path("/z.pub"),), Path("/abs"))
    # An empty list from a repeatable flag means "not given".
    assert load_config(trusted_keys=[]).trusted_keys == (Path("/x.pub"), Path("/y.pub"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('hub_url = "http://a"\ntoken = \n', r"config\.toml:2:\d+: invalid TOML: "),
        ("hub_url = 'http://a'\n[x\n", r"config\.toml:2:\d+: invalid TOML: "),
        ('\n\nhub-url = "http://a"\n', r"config\.toml:3: unknown setting 'hub-url' \(known: "),
        ('[hub]\nurl = "http://a"\n', r"config\.toml:1: unknown setting 'hub'"),
        ('token = "t"\nhub_url = 5\n', r"config\.toml:2: hub_url must be a string, got 5"),
        ('hub_url = "ftp://a"\n', r"config\.toml:1: hub_url must be an http:// or https:// URL"),
        ('trusted_keys = "/a.pub"\n', r"trusted_keys must be a list of paths, got '/a.pub'"),
        ("data_dir = 3\n", r"data_dir must be a path, got 3"),
        (b"token = '\xff'\n", r"cannot read config file"),
    ],
)
def test_bad_file_is_one_line_error(home: Path, text: str | bytes, message: str) -> None:
    path = write_config(home, "")
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(CliError, match=message) as info:
        load_config()
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_worker_env_passthrough_from_file_and_env(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_config().worker_env_passthrough == ()
    write_config(home, 'worker_env_passthrough = ["HF_HOME", "MY_*"]\n')
    assert load_config().worker_env_passthrough == ("HF_HOME", "MY_*")
    monkeypatch.setenv("FLOWCTL_WORKER_ENV_PASSTHROUGH", "HTTPS_PROXY, NO_PROXY")
    assert load_config().worker_env_passthrough == ("HTTPS_PROXY", "NO_PROXY")
    monkeypatch.setenv("FLOWCTL_WORKER_ENV_PASSTHROUGH", "A=B")
    with pytest.raises(CliError, match=r"FLOWCTL_WORKER_ENV_PASSTHROUGH: worker_env_passthrough must be a "
                                       r"list of variable names \(or PREFIX\*\), got \['A=B'\]"):
        load_config()


def test_bad_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWCTL_HUB_URL", "hub:5000")
    with pytest.raises(CliError, match="FLOWCTL_HUB_URL: hub_url must be an http"):
        load_config()


def test_unreadable_path_is_an_error(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWCTL_CONFIG", str(home))  # a directory
    with pytest.raises(CliError, match="cannot read config file"):
        load_file()


def test_import_is_light() -> None:
    code = ("import sys, flowctl.config\n"
            "heavy = [m for m in ('trio', 'httpx', 'quart', 'typer', 'rich') if m in sys.modules]\n"
            "print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "[]"


def test_flowctl_config_at_a_missing_path_means_no_file(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(home, 'token = "from-home"\n')
    monkeypatch.setenv("FLOWCTL_CONFIG", str(home / "none.toml"))
    assert load_config().token is None


def test_default_model_from_flag_env_or_file(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_config().default_model is None
    write_config(home, 'default_model = "from-file"\n')
    assert load_config().default_model == "from-file"
    monkeypatch.setenv("FLOWCTL_DEFAULT_MODEL", "from-env")
    assert load_config().default_model == "from-env"
    assert load_config(default_model="from-flag").default_model == "from-flag"


def test_anonymous_tenant_from_flag_env_or_file(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_config().anonymous_tenant is None
    write_config(home, 'anonymous_tenant = "from-file"\n')
    assert load_config().anonymous_tenant == "from-file"
    monkeypatch.setenv("FLOWCTL_ANONYMOUS_TENANT", "from-env")
    assert load_config().anonymous_tenant == "from-env"
    assert load_config(anonymous_tenant="from-flag").anonymous_tenant == "from-flag"


def test_plane_settings_from_flag_env_seed_alias_or_file(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 002's own variable names work; flowctl's name wins over the seed's, a flag over both."""
    assert load_config().max_sessions is None  # unset: the plane's default (1000)
    path = write_config(home, "max_sessions = 20\nsession_timeout = 90\npublic_ws_url = 'wss://file.example/'\n"
                              "trusted_proxies = ['10.0.0.0/8', '127.0.0.1']\nfirst_byte_timeout = 30\n"
                              "reply_idle_timeout = 40.5\nbody_timeout = 7\nheartbeat_interval = 2\nlost_after = 9\n")
    config = load_config()
    assert (config.max_sessions, config.session_timeout, config.public_ws_url, config.trusted_proxies) == (
        20, 90.0, "wss://file.example", ("10.0.0.0/8", "127.0.0.1/32"))
    assert (config.first_byte_timeout, config.reply_idle_timeout, config.body_timeout) == (30.0, 40.5, 7.0)
    assert (config.heartbeat_interval, config.lost_after) == (2.0, 9.0)
    assert config.sources["max_sessions"] == str(path)
    monkeypatch.setenv("MAX_SESSIONS", "10")
    monkeypatch.setenv("SESSION_TIMEOUT_SECONDS", "60")
    monkeypatch.setenv("WEBSOCKET_URL", "ws://seed.example:9001")
    config = load_config()
    assert (config.max_sessions, config.session_timeout, config.public_ws_url) == (10, 60.0, "ws://seed.example:9001")
    assert config.sources["max_sessions"] == "MAX_SESSIONS"
    monkeypatch.setenv("FLOWCTL_MAX_SESSIONS", "30")
    monkeypatch.setenv("FLOWCTL_TRUSTED_PROXIES", "192.168.0.0/16, ::1")
    config = load_config()
    assert (config.max_sessions, config.trusted_proxies) == (30, ("192.168.0.0/16", "::1/128"))
    config = load_config(max_sessions=40, trusted_proxies=["172.16.0.1"], lost_after=12)
    assert (config.max_sessions, config.trusted_proxies, config.lost_after) == (40, ("172.16.0.1/32",), 12.0)


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("MAX_SESSIONS", "ten", "MAX_SESSIONS: max_sessions must be a whole number from 1"),
    ("FLOWCTL_MAX_SESSIONS", "0", "FLOWCTL_MAX_SESSIONS: max_sessions must be a whole number from 1"),
    ("SESSION_TIMEOUT_SECONDS", "-5", "SESSION_TIMEOUT_SECONDS: session_timeout must be a number of seconds above 0"),
    ("FLOWCTL_LOST_AFTER", "nan", "FLOWCTL_LOST_AFTER: lost_after must be a number of seconds above 0"),
    ("FLOWCTL_BODY_TIMEOUT", "inf", "FLOWCTL_BODY_TIMEOUT: body_timeout must be a number of seconds"),
    ("WEBSOCKET_URL", "http://plane:8080", "WEBSOCKET_URL: public_ws_url must be a ws:// or wss:// URL"),
    ("FLOWCTL_PUBLIC_WS_URL", "wss://h/x?token=1", "public_ws_url must be a ws:// or wss:// URL \\(no query\\)"),
    ("FLOWCTL_TRUSTED_PROXIES", "10.0.0.0/33", "trusted_proxies: '10.0.0.0/33' is not an IP address or CIDR"),
])
def test_bad_plane_setting_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str,
                                                           value: str, message: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(CliError, match=message) as info:
        load_config()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("text", "message"), [
    ("max_sessions = 2.5\n", r"config\.toml:1: max_sessions must be a whole number"),
    ("max_sessions = true\n", r"max_sessions must be a whole number"),
    ("lost_after = 0\n", r"lost_after must be a number of seconds above 0"),
    ("trusted_proxies = 5\n", r"trusted_proxies must be a list of addresses or CIDRs, got 5"),
])
def test_bad_plane_setting_in_the_file_names_file_and_line(home: Path, text: str, message: str) -> None:
    write_config(home, text)
    with pytest.raises(CliError, match=message):
        load_config()
