"""The control plane's tunable settings, shared by `flowctl up` and `flowctl serve`.

Each flag defaults to None (not given), so `flowctl.config` can fall back to the
environment (FLOWCTL_..., or the seed's own name) and the config file; the help names
all three. `up` calls `plane_options(...)` with its flag values; `serve` prefixes a role.
"""

from __future__ import annotations

from typing import Any

import typer

from flowctl.config import SETTINGS


def setting_help(key: str, text: str, role: str = "") -> str:
    """A flag's help: the text, then where else the setting can come from."""
    setting = SETTINGS[key]
    envs = "; ".join(f"env {name}" for name in (setting.env, *setting.aliases))
    if role:
        text = f"With the {role} role: {text[:1].lower()}{text[1:]}"
    return f"{text} [{envs}; config {key}]."


def max_sessions_option(role: str = "") -> Any:
    """--max-sessions."""
    return typer.Option(None, "--max-sessions", metavar="N", help=setting_help(
        "max_sessions", "Realtime sessions open at once (default 1000; seed 002's default was 10)", role))


def session_timeout_option(role: str = "") -> Any:
    """--session-timeout."""
    return typer.Option(None, "--session-timeout", "--session-timeout-seconds", metavar="SECONDS", help=setting_help(
        "session_timeout", "Seconds a realtime session may stay idle before it is closed (default 3600)", role))


def public_ws_url_option(role: str = "") -> Any:
    """--public-ws-url."""
    return typer.Option(None, "--public-ws-url", "--websocket-url", metavar="URL", help=setting_help(
        "public_ws_url", "The ws:// or wss:// base of the engine_url handed to session clients, e.g. "
                         "wss://tutor.example.com (wins over the request's host and X-Forwarded-*)", role))


def trusted_proxy_option(role: str = "") -> Any:
    """--trusted-proxy, repeatable."""
    return typer.Option([], "--trusted-proxy", "--trusted-proxies", metavar="CIDR", help=setting_help(
        "trusted_proxies", "A proxy address or CIDR whose X-Forwarded-Proto/-Host the engine_url and the "
                           "sign-in cookie's Secure flag follow, and whose X-Forwarded-For the audit log records; "
                           "repeat for several (the headers of anyone else are ignored)", role))


def first_byte_timeout_option(role: str = "") -> Any:
    """--first-byte-timeout."""
    return typer.Option(None, "--first-byte-timeout", metavar="SECONDS", help=setting_help(
        "first_byte_timeout", "Seconds the gateway waits for a model's first byte, then 504 (default 120)", role))


def reply_idle_timeout_option(role: str = "") -> Any:
    """--reply-idle-timeout."""
    return typer.Option(None, "--reply-idle-timeout", metavar="SECONDS", help=setting_help(
        "reply_idle_timeout", "Seconds a model's reply may pause mid-stream before the gateway cuts it "
                              "(default 300)", role))


def body_timeout_option(role: str = "") -> Any:
    """--body-timeout."""
    return typer.Option(None, "--body-timeout", metavar="SECONDS", help=setting_help(
        "body_timeout", "Seconds the gateway gives a request body to arrive, then 408 (default 60)", role))


def heartbeat_interval_option(role: str = "") -> Any:
    """--heartbeat-interval."""
    return typer.Option(None, "--heartbeat-interval", metavar="SECONDS", help=setting_help(
        "heartbeat_interval", "Seconds between node heartbeats (default 5)", role))


def plane_name_option(role: str = "") -> Any:
    """--plane-name."""
    return typer.Option(None, "--plane-name", metavar="NAME", help=setting_help(
        "plane_name", "This plane's name among several sharing one state (docs/scale-out.md): set, the planes "
                      "elect one scheduler and jobs leader through a lease (unset: this plane leads alone)", role))


def leader_ttl_option(role: str = "") -> Any:
    """--leader-ttl."""
    return typer.Option(None, "--leader-ttl", metavar="SECONDS", help=setting_help(
        "leader_ttl", "Seconds the leader's lease lasts without renewal; another plane takes over within it "
                      "(with --plane-name; default 10)", role))


def lost_after_option(role: str = "") -> Any:
    """--lost-after."""
    return typer.Option(None, "--lost-after", metavar="SECONDS", help=setting_help(
        "lost_after", "A node silent this many seconds is lost and its replicas move (default 15)", role))


def tutors_option(role: str = "") -> Any:
    """--tutors FILE."""
    return typer.Option(None, "--tutors", metavar="FILE", help=setting_help(
        "tutors", "A TOML or JSON file mapping each tutor_id to its voice pipeline (model, asr_model, tts_model, "
                  "voice), used when a session's create body names a tutor and no models", role))


def state_option(role: str = "") -> Any:
    """--state URL."""
    return typer.Option(None, "--state", metavar="URL", help=setting_help(
        "state", "Where the plane keeps its state: sqlite:///DIR (default: SQLite files in the data dir) or "
                 "postgresql://user[:password]@host:port/db, shared by several planes (docs/scale-out.md)", role))


def check_state(cfg: Any) -> None:
    """A bad --state URL is one line before anything starts (connecting is the plane's job)."""
    from flowctl.errors import CliError

    if cfg.state:
        from hub_store.sql import State, StateError

        try:
            State.parse(cfg.state)
        except StateError as exc:
            raise CliError(str(exc)) from None


def redis_option(role: str = "") -> Any:
    """--redis URL."""
    return typer.Option(None, "--redis", metavar="URL", help=setting_help(
        "redis", "redis://[user:password@]host:port/db holding the rpm/tpm and concurrency limits, shared by "
                 "every plane given the same URL (docs/scale-out.md; unset: each plane counts alone)", role))


def blobs_option(role: str = "") -> Any:
    """--blobs URL."""
    return typer.Option(None, "--blobs", metavar="URL", help=setting_help(
        "blobs", "Where the hub keeps blobs: file:///DIR (default: the data dir) or s3://BUCKET/PREFIX on any "
                 "S3-compatible store (endpoint from FLOWCTL_S3_ENDPOINT_URL, credentials and region from "
                 "AWS_*); downloads from S3 are 307 redirects to presigned URLs", role))


def blob_url_ttl_option(role: str = "") -> Any:
    """--blob-url-ttl."""
    return typer.Option(None, "--blob-url-ttl", metavar="SECONDS", help=setting_help(
        "blob_url_ttl", "Seconds a presigned download URL of an S3 blob store stays valid (default 300)", role))


def blob_settings(cfg: Any) -> dict[str, Any]:
    """HubSettings keywords for where blobs live, checked now: a bad URL, a missing bucket or refused
    credentials are one line before anything starts (no admin key generated, no port bound)."""
    from flowctl.errors import CliError

    chosen: dict[str, Any] = {}
    if cfg.blobs:
        from hub_store import StoreError
        from runtime.hub.blobstore import reach_blobs

        try:
            reach_blobs(cfg.blobs)
        except StoreError as exc:
            raise CliError(str(exc)) from None
        chosen["blobs"] = cfg.blobs
    if cfg.blob_url_ttl:
        chosen["blob_url_ttl"] = cfg.blob_url_ttl
    return chosen
