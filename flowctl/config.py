"""CLI settings: a flag beats its environment variable, which beats the config file.

The file is TOML, ``$FLOWCTL_CONFIG`` if set, else ``$XDG_CONFIG_HOME/flowctl/config.toml``
(``~/.config/flowctl/config.toml``), with flat keys::

    hub_url = "http://hub.example:5000"
    server_url = "http://plane.example:8080"
    token = "..."
    data_dir = "~/flowctl-data"        # relative paths are relative to this file
    blobs = "s3://flowctl-blobs/hub"   # hub blobs in S3 (FLOWCTL_S3_ENDPOINT_URL, AWS_*); default: data_dir
    blob_url_ttl = 300                 # seconds a presigned blob download URL stays valid
    state = "postgresql://flow@db:5432/flow"   # the plane's state; default: SQLite files in data_dir
    trusted_keys = ["~/keys/release.pub"]
    worker_env_passthrough = ["HF_HOME", "HTTPS_PROXY"]   # more of the node's env for workers
    default_model = "gemma3-270m"      # the model of a session created without one
    anonymous_tenant = "seed"          # requests without an API key are this tenant's (off if unset)
    max_sessions = 1000                # realtime sessions open at once (seed 002: MAX_SESSIONS)
    session_timeout = 3600             # seconds a session may stay idle (SESSION_TIMEOUT_SECONDS)
    public_ws_url = "wss://tutor.example.com"   # engine_url's base for clients (WEBSOCKET_URL)
    trusted_proxies = ["10.0.0.0/8"]   # whose X-Forwarded-Proto/-Host engine_url believes
    first_byte_timeout = 120           # gateway: seconds for a model's first byte (504 after)
    reply_idle_timeout = 300           # gateway: seconds a reply may pause mid-stream
    body_timeout = 60                  # gateway: seconds for a request body to arrive (408 after)
    heartbeat_interval = 5             # seconds between node heartbeats (scheduler)
    lost_after = 15                    # a node silent this long is lost; its replicas move
    tutors = "tutors.toml"             # tutor_id -> voice pipeline (or inline [tutors.1]; flowctl/tutors.py)

Some settings also read the seed's own variable names (`Setting.aliases`): a FLOWCTL_
variable wins over its alias, and a flag over both.

Only the standard library is imported here, so every command can use it cheaply. Adding
a setting is one `Setting` line in `SETTINGS`; unknown keys in the file are an error, so
a typo does not silently fall back to a default.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowctl.errors import CliError

__all__ = [
    "CONFIG_ENV",
    "SETTINGS",
    "Config",
    "Setting",
    "config_path",
    "default_data_dir",
    "load_config",
    "load_file",
    "resolve",
]

CONFIG_ENV = "FLOWCTL_CONFIG"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\*?")


@dataclass(frozen=True)
class Setting:
    """One configurable value: its key in the file, its environment variable and its kind."""

    key: str
    env: str
    kind: str  # "url", "str", "path", "paths", "names", "ws_url", "redis_url", "count", "seconds", "networks", "tutors"
    help: str
    aliases: tuple[str, ...] = ()  # the seed's names for the same variable, read after `env`


SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in (
        Setting("hub_url", "FLOWCTL_HUB_URL", "url", "the hub to publish to and pull from"),
        Setting("server_url", "FLOWCTL_SERVER", "url",
                "the control plane that deploy, status and node join talk to"),
        Setting("token", "FLOWCTL_TOKEN", "str", "bearer token sent to the hub"),
        Setting("data_dir", "FLOWCTL_DATA_DIR", "path", "where servers and nodes keep state"),
        Setting("blobs", "FLOWCTL_BLOBS", "str",
                "where the hub keeps blobs: file:///DIR (default: the data dir) or s3://BUCKET/PREFIX"),
        Setting("blob_url_ttl", "FLOWCTL_BLOB_URL_TTL", "seconds",
                "seconds a presigned download URL of an S3 blob store stays valid (default 300)"),
        Setting("state", "FLOWCTL_STATE", "str",
                "the plane's state database: sqlite:///DIR (default: the data dir) or postgresql://..."),
        Setting("trusted_keys", "FLOWCTL_TRUSTED_KEYS", "paths",
                "public keys (or directories of *.pub) whose signatures are trusted"),
        Setting("worker_env_passthrough", "FLOWCTL_WORKER_ENV_PASSTHROUGH", "names",
                "variables (or PREFIX*) of the node's environment that workers also see"),
        Setting("default_model", "FLOWCTL_DEFAULT_MODEL", "str",
                "the model of a session whose create body names none (seed 002's body)"),
        Setting("anonymous_tenant", "FLOWCTL_ANONYMOUS_TENANT", "str",
                "the tenant that serves requests without an API key (seed clients); unset: refused"),
        Setting("max_sessions", "FLOWCTL_MAX_SESSIONS", "count", "realtime sessions open at once",
                ("MAX_SESSIONS",)),
        Setting("session_timeout", "FLOWCTL_SESSION_TIMEOUT", "seconds",
                "seconds a realtime session may stay idle before it is closed", ("SESSION_TIMEOUT_SECONDS",)),
        Setting("public_ws_url", "FLOWCTL_PUBLIC_WS_URL", "ws_url",
                "the ws:// or wss:// base of the engine_url handed to session clients", ("WEBSOCKET_URL",)),
        Setting("trusted_proxies", "FLOWCTL_TRUSTED_PROXIES", "networks",
                "proxies (addresses or CIDRs) whose X-Forwarded-Proto/-Host the engine_url follows"),
        Setting("first_byte_timeout", "FLOWCTL_FIRST_BYTE_TIMEOUT", "seconds",
                "seconds the gateway waits for a model's first byte (504 after)"),
        Setting("reply_idle_timeout", "FLOWCTL_REPLY_IDLE_TIMEOUT", "seconds",
                "seconds a model's reply may pause mid-stream before the gateway cuts it"),
        Setting("body_timeout", "FLOWCTL_BODY_TIMEOUT", "seconds",
                "seconds the gateway gives a request body to arrive (408 after)"),
        Setting("heartbeat_interval", "FLOWCTL_HEARTBEAT_INTERVAL", "seconds", "seconds between node heartbeats"),
        Setting("lost_after", "FLOWCTL_LOST_AFTER", "seconds",
                "a node silent this long is lost and its replicas move"),
        Setting("redis", "FLOWCTL_REDIS", "redis_url",
                "the Redis that keeps rate and concurrency limits shared by several planes; unset: in-process"),
        Setting("plane_name", "FLOWCTL_PLANE_NAME", "str",
                "this plane's name among several sharing one state; set, the planes elect one scheduler leader"),
        Setting("leader_ttl", "FLOWCTL_LEADER_TTL", "seconds",
                "seconds the scheduler and job leases last without renewal (several planes; default 10)"),
        Setting("tutors", "FLOWCTL_TUTORS", "tutors",
                "the tutor table (tutor_id -> model, asr_model, tts_model, voice): a TOML or JSON file"),
    )
}
MAX_SECONDS = 86400.0 * 7
MAX_COUNT = 1_000_000


@dataclass(frozen=True)
class Config:
    """The resolved settings, and for each one where its value came from."""

    hub_url: str | None = None
    server_url: str | None = None
    token: str | None = None
    data_dir: Path = field(default_factory=lambda: default_data_dir())
    blobs: str | None = None
    blob_url_ttl: float | None = None
    state: str | None = None
    trusted_keys: tuple[Path, ...] = ()
    worker_env_passthrough: tuple[str, ...] = ()
    default_model: str | None = None
    anonymous_tenant: str | None = None
    max_sessions: int | None = None  # None: the component's own default
    session_timeout: float | None = None
    public_ws_url: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    first_byte_timeout: float | None = None
    reply_idle_timeout: float | None = None
    body_timeout: float | None = None
    heartbeat_interval: float | None = None
    lost_after: float | None = None
    tutors: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    plane_name: str | None = None
    leader_ttl: float | None = None
    redis: str | None = None
    sources: Mapping[str, str] = field(default_factory=dict)


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The config file's path (which need not exist)."""
    env = os.environ if environ is None else environ
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".config"
    return root / "flowctl" / "config.toml"


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/flowctl``, or ``~/.local/share/flowctl``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "share"
    return root / "flowctl"


def load_file(path: Path | None = None) -> dict[str, Any]:
    """The settings in the config file, checked and converted; {} when there is no file.

    A missing file is not an error, even one named by ``$FLOWCTL_CONFIG``: tests and
    scripts point it at a path that does not exist to ignore the user's own config.

    Error handling: an unreadable or malformed file, an unknown key or a value of the
    wrong type raises `CliError` naming the file and, where known, the line.
    """
    path = config_path() if path is None else path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise CliError(f"cannot read config file {str(path)!r}: {reason}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise CliError(_toml_error(path, error)) from None
    values: dict[str, Any] = {}
    for key, value in raw.items():
        where = _where(path, text, key)
        setting = SETTINGS.get(key)
        if setting is None:
            known = ", ".join(sorted(SETTINGS))
            raise CliError(f"{where}: unknown setting {key!r} (known: {known})")
        values[key] = _convert(setting, value, where, base=path.parent)
    return values


def resolve(
    name: str,
    flag_value: Any = None,
    *,
    env: str | None = None,
    default: Any = None,
    environ: Mapping[str, str] | None = None,
    file_values: Mapping[str, Any] | None = None,
) -> Any:
    """One setting's value: `flag_value` if given, else its environment variable, else the
    config file, else `default`.

    A flag of None (or an empty list) counts as not given, and so does an empty variable.
    `env` defaults to the setting's variable; `file_values` to reading the config file.
    """
    return _resolve(name, flag_value, env=env, default=default, environ=environ,
                    file_values=file_values)[0]


def load_config(
    *,
    hub_url: str | None = None,
    server_url: str | None = None,
    token: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    trusted_keys: Sequence[str | os.PathLike[str]] | None = None,
    default_model: str | None = None,
    anonymous_tenant: str | None = None,
    environ: Mapping[str, str] | None = None,
    **more_flags: Any,
) -> Config:
    """All settings at once; the keyword arguments are the command-line flags (None: not given).

    `more_flags` are the flags of the other settings, by key (`max_sessions=10`, ...).
    """
    env = os.environ if environ is None else environ
    path = config_path(env)
    file_values = load_file(path)
    unknown = set(more_flags) - set(SETTINGS)
    if unknown:
        raise ValueError(f"unknown setting {sorted(unknown)[0]!r}; add it to flowctl.config.SETTINGS")
    flags = {"hub_url": hub_url, "server_url": server_url, "token": token, "data_dir": data_dir,
             "trusted_keys": trusted_keys, "default_model": default_model,
             "anonymous_tenant": anonymous_tenant, **more_flags}
    defaults: dict[str, Any] = {"data_dir": default_data_dir(env), "trusted_keys": (),
                                "worker_env_passthrough": (), "trusted_proxies": (), "tutors": {}}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in SETTINGS:
        values[key], sources[key] = _resolve(key, flags.get(key), env=None,
                                             default=defaults.get(key), environ=env,
                                             file_values=file_values, file_origin=str(path))
    return Config(**values, sources=sources)


def _resolve(
    name: str,
    flag_value: Any,
    *,
    env: str | None,
    default: Any,
    environ: Mapping[str, str] | None,
    file_values: Mapping[str, Any] | None,
    file_origin: str = "config file",
) -> tuple[Any, str]:
    setting = SETTINGS.get(name)
    if setting is None:
        raise ValueError(f"unknown setting {name!r}; add it to flowctl.config.SETTINGS")
    environ = os.environ if environ is None else environ
    if flag_value is not None and not (_is_sequence(flag_value) and len(flag_value) == 0):
        return _convert(setting, flag_value, "command-line flag", base=Path.cwd()), "flag"
    for env_name in (env or setting.env, *setting.aliases):
        if environ.get(env_name):
            return _convert(setting, _from_env(setting, environ[env_name]), env_name, base=Path.cwd()), env_name
    if file_values is None:
        path = config_path(environ)
        file_values = load_file(path)
        file_origin = str(path)
    if name in file_values:
        return file_values[name], file_origin
    return default, "default"


def _from_env(setting: Setting, raw: str) -> Any:
    """An environment variable's text as the file would give it (lists split, numbers as text)."""
    if setting.kind == "paths":
        return [p for p in raw.split(os.pathsep) if p]
    if setting.kind in ("names", "networks"):
        return raw.replace(",", " ").split()
    return raw


def _convert(setting: Setting, value: Any, where: str, *, base: Path) -> Any:
    if setting.kind == "tutors":
        from flowctl.tutors import load_tutors

        return load_tutors(value, where, base)
    if setting.kind in ("count", "seconds"):
        return _number(setting, value, where)
    if setting.kind == "networks":
        return _networks(setting, value, where)
    if setting.kind == "names":
        if not _is_sequence(value) or not all(isinstance(v, str) and _NAME.fullmatch(v) for v in value):
            raise CliError(f"{where}: {setting.key} must be a list of variable names (or PREFIX*), got {value!r}")
        return tuple(value)
    if setting.kind == "paths":
        if isinstance(value, str | os.PathLike) or not _is_sequence(value):
            raise CliError(f"{where}: {setting.key} must be a list of paths, got {value!r}")
        return tuple(_convert_path(setting, item, where, base) for item in value)
    if setting.kind == "path":
        return _convert_path(setting, value, where, base)
    if not isinstance(value, str):
        raise CliError(f"{where}: {setting.key} must be a string, got {value!r}")
    if setting.kind == "url" and not re.match(r"https?://[^/\s]+", value):
        raise CliError(f"{where}: {setting.key} must be an http:// or https:// URL, got {value!r}")
    if setting.kind == "redis_url" and not re.match(r"rediss?://[^/\s]+", value):
        shown = re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", value)  # never echo a password
        raise CliError(f"{where}: {setting.key} must be a redis:// or rediss:// URL, got {shown!r}")
    if setting.kind == "ws_url" and not re.fullmatch(r"wss?://[^/\s?#]+(/[^\s?#]*)?", value):
        raise CliError(f"{where}: {setting.key} must be a ws:// or wss:// URL (no query), got {value!r}")
    return value.rstrip("/") if setting.kind in ("url", "ws_url") else value


def _number(setting: Setting, value: Any, where: str) -> int | float:
    """A count (a whole number from 1) or seconds (above 0), from a number or its text."""
    count = setting.kind == "count"
    number: int | float | None = None
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            number = int(value) if count else float(value)
        except ValueError:
            pass
        if count and isinstance(value, float) and not value.is_integer():
            number = None
    if count and number is not None and 1 <= number <= MAX_COUNT:
        return number
    if not count and number is not None and 0 < number <= MAX_SECONDS:  # NaN fails both comparisons
        return number
    what = f"a whole number from 1 to {MAX_COUNT}" if count else f"a number of seconds above 0, at most {MAX_SECONDS:g}"
    raise CliError(f"{where}: {setting.key} must be {what}, got {value!r}")


def _networks(setting: Setting, value: Any, where: str) -> tuple[str, ...]:
    """Addresses or CIDRs (10.0.0.0/8, 127.0.0.1, ::1), checked and normalised."""
    import ipaddress

    items = [value] if isinstance(value, str) else value
    if not _is_sequence(items):
        raise CliError(f"{where}: {setting.key} must be a list of addresses or CIDRs, got {value!r}")
    networks = []
    # "10.0.0.0/8, 127.0.0.1" in one flag or list item is two networks.
    for item in [part for entry in items for part in str(entry).replace(",", " ").split()]:
        try:
            networks.append(str(ipaddress.ip_network(str(item).strip(), strict=False)))
        except ValueError:
            raise CliError(f"{where}: {setting.key}: {item!r} is not an IP address or CIDR "
                           "(e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def _convert_path(setting: Setting, value: Any, where: str, base: Path) -> Path:
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise CliError(f"{where}: {setting.key} must be a path, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _toml_error(path: Path, error: tomllib.TOMLDecodeError) -> str:
    message = str(error)
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if match is None:
        return f"{path}: invalid TOML: {message}"
    return f"{path}:{match.group(1)}:{match.group(2)}: invalid TOML: {message[:match.start()]}"


def _where(path: Path, text: str, key: str) -> str:
    """``path:line`` of `key`'s assignment or table header, best effort (tomllib has no positions)."""
    name = rf"[\"']?{re.escape(key)}[\"']?"
    pattern = re.compile(rf"^[ \t]*(?:{name}[ \t]*[=.]|\[+[ \t]*{name}[ \t]*[\].])", re.MULTILINE)
    match = pattern.search(text)
    return f"{path}:{text.count(chr(10), 0, match.start()) + 1}" if match else str(path)
