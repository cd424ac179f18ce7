"""`flowctl publish BUNDLE`: upload a bundle to a hub."""

from __future__ import annotations

from pathlib import Path

import typer

HUB_HELP = "Hub URL [env FLOWCTL_HUB_URL; config hub_url; default http://127.0.0.1:5000]."
TOKEN_HELP = "The hub's admin key [env FLOWCTL_TOKEN; config token]."
DEFAULT_HUB = "http://127.0.0.1:5000"


def hub_settings(hub: str | None, token: str | None) -> tuple[str, str | None]:
    """(hub URL, token) from flag > env > config file > default."""
    from flowctl.config import load_config

    cfg = load_config(hub_url=hub, token=token)
    return cfg.hub_url or DEFAULT_HUB, cfg.token


def publish(
    bundle: Path = typer.Argument(..., metavar="BUNDLE", exists=True, dir_okay=False,
                                  help="The .fbundle file (from `flowctl pack`)."),
    hub: str | None = typer.Option(None, "--hub", help=HUB_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    stable: bool | None = typer.Option(None, "--stable/--unstable",
                                       help="Mark the version stable (default: yes, unless a pre-release)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Publish BUNDLE to a hub: streamed upload, verified there (digest, files, signature).

    A version is immutable: publishing the same bytes again is a no-op, other bytes
    for a published version are refused.
    """
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
    stdout.print(f"{what}: {result['service_id']}@{result['version']} sha256:{result['sha256']} "
                 f"({human_bytes(result['size_bytes'])}) to {url}")
    if result.get("created"):
        stdout.print(f"  new blobs: {result.get('new_blobs', 0)} ({human_bytes(result.get('new_bytes', 0))}), "
                     f"stable: {'yes' if result.get('stable') else 'no'}")


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("publish")(publish)
