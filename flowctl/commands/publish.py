"""`flowctl publish BUNDLE|DIR`: upload a bundle (or pack a directory and upload it) to a hub."""

from __future__ import annotations

from pathlib import Path

import typer

HUB_HELP = ("Hub URL [env FLOWCTL_HUB_URL, else FLOWCTL_SERVER (the plane serves the hub); "
            "config hub_url, else server_url; default http://127.0.0.1:5000].")
TOKEN_HELP = "The hub's admin key [env FLOWCTL_TOKEN; config token]."
DEFAULT_HUB = "http://127.0.0.1:5000"


def hub_settings(hub: str | None, token: str | None) -> tuple[str, str | None]:
    """(hub URL, token) from --hub > FLOWCTL_HUB_URL > FLOWCTL_SERVER > config file > default.

    The control plane serves the hub on its own port, so the plane's URL is the hub's
    unless a hub URL is set at the same level or above.
    """
    from flowctl.config import load_config

    cfg = load_config(hub_url=hub, token=token)
    if cfg.hub_url and cfg.sources["hub_url"] in ("flag", "FLOWCTL_HUB_URL"):
        return cfg.hub_url, cfg.token
    if cfg.server_url and cfg.sources["server_url"] == "FLOWCTL_SERVER":
        return cfg.server_url, cfg.token
    return cfg.hub_url or cfg.server_url or DEFAULT_HUB, cfg.token


def publish(
    bundle: Path = typer.Argument(..., metavar="BUNDLE|DIR", exists=True,
                                  help="The .fbundle file (from `flowctl pack`), a service directory to pack, "
                                       "or a seed service .zip."),
    hub: str | None = typer.Option(None, "--hub", help=HUB_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    stable: bool | None = typer.Option(None, "--stable/--unstable",
                                       help="Mark the version stable (default: yes, unless a pre-release)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Publish BUNDLE to a hub: streamed upload, verified there (digest, files, signature).

    A directory is packed first (as `flowctl pack DIR` does, into a temporary file); a seed
    service zip (service.json + files + checksum.sha256) is checked and packed the way the
    hub packs one PUT to it, so the bundle is the same. A version is immutable: publishing
    the same bytes again is a no-op, other bytes for a published version are refused.

    Example: flowctl publish examples/echo
    """
    from packer.zipimport import is_zip

    if bundle.is_dir() or is_zip(bundle):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="flowctl-publish-") as tmp:
            if bundle.is_dir():
                from packer.pack import pack_dir

                packed = pack_dir(bundle, Path(tmp)).path
            else:
                from packer.zipimport import bundle_from_zip

                packed = bundle_from_zip(bundle, Path(tmp)).path
            _publish(packed, hub, token, stable, json_out)
        return
    _publish(bundle, hub, token, stable, json_out)


def _publish(bundle: Path, hub: str | None, token: str | None, stable: bool | None, json_out: bool) -> None:
    import trio

    from flowctl.console import byte_progress, human_bytes, print_json
    from flowctl.console import out as stdout
    from runtime.clients.hub import HubClient

    url, key = hub_settings(hub, token)
    size = bundle.stat().st_size

    async def run() -> dict:
        async with HubClient(url, token=key) as client:
            with byte_progress(size, "uploading") as advance:
                return await client.publish(bundle, stable=stable, progress=advance)

    result = trio.run(run)
    if json_out:
        print_json(result)
        return
    what = "published" if result.get("created") else "already published (identical bytes)"
    digest = result.get("bundle_sha256", result["sha256"])
    size = result.get("bundle_size_bytes", result["size_bytes"])
    stdout.print(f"{what}: {result['service_id']}@{result['version']} sha256:{digest} "
                 f"({human_bytes(size)}) to {url}")
    if result.get("created"):
        stdout.print(f"  new blobs: {result.get('new_blobs', 0)} ({human_bytes(result.get('new_bytes', 0))}), "
                     f"stable: {'yes' if result.get('stable') else 'no'}")


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("publish")(publish)
