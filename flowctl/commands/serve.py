"""`flowctl serve --roles hub`: run the long-running parts in one process."""

from __future__ import annotations

from pathlib import Path

import typer

from flowctl.commands import plane_options as opt
from flowctl.commands.up import ANONYMOUS_TENANT_HELP, DEFAULT_MODEL_HELP

ROLES = ("hub", "scheduler", "gateway", "jobs")


def serve(
    roles: str = typer.Option("hub", "--roles",
                              help="Comma-separated roles to run on one port: hub, scheduler, gateway, jobs "
                                   "(the gateway needs the scheduler)."),
    data_dir: Path | None = typer.Option(None, "--data-dir",
                                         help="State directory [env FLOWCTL_DATA_DIR; config data_dir]."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 for all)."),
    port: int = typer.Option(5000, "--port", min=0, max=65535, help="Port (the seed's hub uses 5000)."),
    max_publish_size: str = typer.Option("64GiB", "--max-publish-size",
                                         help="Largest bundle a publish may upload (e.g. 500MiB, 64GiB)."),
    trust: list[Path] = typer.Option([], "--trust",
                                     help="Public key whose signatures are trusted; repeat for several "
                                          "[env FLOWCTL_TRUSTED_KEYS; config trusted_keys]."),
    require_signature: bool = typer.Option(False, "--require-signature",
                                           help="Refuse unsigned bundles (needs --trust)."),
    private: bool = typer.Option(False, "--private", help="Reading the hub also needs the admin key."),
    blobs: str | None = opt.blobs_option("hub"),
    blob_url_ttl: float | None = opt.blob_url_ttl_option("hub"),
    state: str | None = opt.state_option(),
    hub_url: str | None = typer.Option(None, "--hub-url",
                                       help="With the scheduler role: the hub URL nodes download from "
                                            "(default: this server)."),
    heartbeat_interval: float | None = opt.heartbeat_interval_option("scheduler"),
    lost_after: float | None = opt.lost_after_option("scheduler"),
    plane_name: str | None = opt.plane_name_option("scheduler"),
    leader_ttl: float | None = opt.leader_ttl_option("scheduler"),
    redis: str | None = opt.redis_option("gateway"),
    default_model: str | None = typer.Option(None, "--default-model",
                                             help=f"With the gateway role: {DEFAULT_MODEL_HELP}"),
    anonymous_tenant: str | None = typer.Option(None, "--anonymous-tenant",
                                                help=f"With the gateway role: {ANONYMOUS_TENANT_HELP}"),
    max_sessions: int | None = opt.max_sessions_option("gateway"),
    session_timeout: float | None = opt.session_timeout_option("gateway"),
    public_ws_url: str | None = opt.public_ws_url_option("gateway"),
    trusted_proxy: list[str] = opt.trusted_proxy_option("gateway"),
    first_byte_timeout: float | None = opt.first_byte_timeout_option("gateway"),
    reply_idle_timeout: float | None = opt.reply_idle_timeout_option("gateway"),
    body_timeout: float | None = opt.body_timeout_option("gateway"),
    tutors: Path | None = opt.tutors_option("gateway"),
) -> None:
    """Serve the hub, scheduler and gateway roles.

    --roles chooses which run, on one port (default: the hub alone).

    The hub serves bundles, blobs and models over HTTP, with publish behind an admin key;
    the scheduler takes nodes and deployments; the gateway serves the /v1 API.

    The admin key comes from FLOWCTL_ADMIN_KEY; without it one is generated on the
    first start and printed once (only its hash is kept in the data dir). Clients
    pass it with --token or FLOWCTL_TOKEN. With the gateway role, /metrics takes the admin
    key or FLOWCTL_METRICS_TOKEN. Stop with Ctrl-C: requests in flight drain.
    """
    import os

    from flowctl.config import load_config
    from flowctl.errors import CliError

    wanted = [r.strip() for r in roles.split(",") if r.strip()]
    unknown = [r for r in wanted if r not in ROLES]
    if unknown or not wanted:
        raise CliError(f"role {(unknown or [roles])[0]!r} is not available (available: {', '.join(ROLES)})")
    if "gateway" in wanted and "scheduler" not in wanted:
        raise CliError("the gateway role needs the scheduler role: --roles hub,scheduler,gateway")
    if require_signature and not trust and not os.environ.get("FLOWCTL_TRUSTED_KEYS"):
        raise CliError("--require-signature needs at least one --trust KEY")
    cfg = load_config(data_dir=data_dir, state=state, trusted_keys=trust or None, default_model=default_model,
                      blobs=blobs, blob_url_ttl=blob_url_ttl,
                      anonymous_tenant=anonymous_tenant, max_sessions=max_sessions, session_timeout=session_timeout,
                      public_ws_url=public_ws_url, trusted_proxies=trusted_proxy or None,
                      first_byte_timeout=first_byte_timeout, reply_idle_timeout=reply_idle_timeout,
                      body_timeout=body_timeout, heartbeat_interval=heartbeat_interval, lost_after=lost_after,
                      tutors=tutors, plane_name=plane_name, leader_ttl=leader_ttl, redis=redis)
    _run(cfg, tuple(wanted), host=host, port=port, max_publish=parse_size(max_publish_size),
         require_signature=require_signature, private=private, hub_url=hub_url)


def _run(cfg, roles: tuple[str, ...], *, host: str, port: int, max_publish: int,
         require_signature: bool, private: bool, hub_url: str | None) -> None:
    import os
    import signal
    from functools import partial

    import trio

    from flowctl.commands.up import (
        gateway_settings,
        leader_settings,
        scheduler_settings,
        session_settings,
    )
    from flowctl.console import err
    from flowctl.console import out as stdout
    from packer.signing import load_public_key
    from runtime.hub import HubSettings, serve_hub

    timings = scheduler_settings(cfg)  # checked before anything starts
    opt.check_state(cfg)
    keys = tuple(load_public_key(p) for p in _expand_keys(cfg.trusted_keys))
    settings = HubSettings(data_dir=Path(cfg.data_dir), host=host, port=port, max_publish_bytes=max_publish,
                           trusted_keys=keys, require_signature=require_signature, private=private,
                           **opt.blob_settings(cfg))

    def new_key(key: str) -> None:
        err.print("[bold]A new admin key was generated; it is shown only this once:[/bold]")
        stdout.print(key)
        err.print("Publish with: flowctl publish BUNDLE --token KEY (or export FLOWCTL_TOKEN=KEY)")
        err.print("Lost it? Restart with FLOWCTL_ADMIN_KEY=NEW_SECRET set: that becomes the admin key.")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            admin_key = os.environ.get("FLOWCTL_ADMIN_KEY")
            if roles == ("hub",) and not cfg.state:  # a hub on a shared state runs as a plane
                urls = await nursery.start(partial(serve_hub, settings, admin_key=admin_key,
                                                   on_new_key=new_key, wrap_app=_with_api_docs))
            else:
                from runtime.plane import PlaneSettings, serve_control_plane

                plane = PlaneSettings(data_dir=settings.data_dir, state=cfg.state, roles=roles, host=host, port=port,
                                      hub=settings, hub_url=hub_url, **timings,
                                      extra={"sessions": session_settings(cfg), "gateway": gateway_settings(cfg),
                                             **leader_settings(cfg)})
                handle = await nursery.start(partial(serve_control_plane, plane, admin_key=admin_key,
                                                     metrics_token=os.environ.get("FLOWCTL_METRICS_TOKEN"),
                                                     on_new_key=new_key))
                urls = handle.urls
            err.print(f"{'+'.join(roles)} serving {settings.data_dir} on {', '.join(map(str, urls))} "
                      "(Ctrl-C to stop)")
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    err.print(f"{signal.Signals(signum).name}: draining and stopping")
                    nursery.cancel_scope.cancel()
                    break

    from flowctl.errors import user_errors

    try:
        trio.run(main)
    except KeyboardInterrupt:
        err.print("stopped")
    except BaseExceptionGroup as group:
        # A user-fixable error (port in use, bad data dir) arrives wrapped by the nursery.
        matched, rest = group.split(user_errors())
        if matched is None or rest is not None:
            raise
        leaf: BaseException = matched
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        raise leaf from None


def _with_api_docs(app) -> None:
    """The hub alone answers /openapi.json and the /docs explorer as the plane does."""
    from flowctl import __version__
    from runtime.api.openapi import ApiDocs
    from runtime.plane_openapi import hub_document

    app.asgi_app = ApiDocs(hub_document(__version__), app.asgi_app, title="flowctl hub")


def _expand_keys(paths) -> list[Path]:
    found: list[Path] = []
    for p in paths:
        p = Path(p)
        found.extend(sorted(p.glob("*.pub")) if p.is_dir() else [p])
    return found


def parse_size(text: str) -> int:
    """'500MiB' / '64GiB' / '1048576' -> bytes."""
    from flowctl.errors import CliError

    units = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
             "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
    raw = text.strip().lower()
    number = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(number):]
    if not number.isdigit() or unit not in units:
        raise CliError(f"size {text!r} is not a number with an optional unit (KiB, MiB, GiB, TiB)")
    return int(number) * units[unit]


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("serve")(serve)
