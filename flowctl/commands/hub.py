"""`flowctl hub ls / info / pull / stable / yank / gc / fsck / ranking`: use a hub."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from flowctl.commands.publish import HUB_HELP, TOKEN_HELP, hub_settings

hub_app = typer.Typer(name="hub", help="List, inspect and pull what a hub serves; admin it.",
                      no_args_is_help=True)

HubOpt = typer.Option(None, "--hub", help=HUB_HELP)
TokenOpt = typer.Option(None, "--token", help=TOKEN_HELP)
JsonOpt = typer.Option(False, "--json", help="Print JSON for scripts.")
DataDirOpt = typer.Option(None, "--data-dir", help="Work on this hub data dir directly instead of over HTTP.")
BlobsOpt = typer.Option(None, "--blobs", metavar="URL",
                        help="With --data-dir: where its blobs are, file:///DIR or s3://BUCKET/PREFIX "
                             "(default: the data dir) [env FLOWCTL_BLOBS; config blobs].")


def _call(hub: str | None, token: str | None, fn: Any) -> Any:
    """Run `fn(client)` against the configured hub."""
    import trio

    from runtime.clients.hub import HubClient

    url, key = hub_settings(hub, token)

    async def run() -> Any:
        async with HubClient(url, token=key) as client:
            return await fn(client)

    return trio.run(run)


def _ref(text: str, *, exact: bool = False) -> tuple[str, str]:
    from flowctl.errors import CliError
    from hub_store import InvalidIdentifier, ids

    try:
        sid, ver = ids.split_ref(text)
    except InvalidIdentifier as exc:
        raise CliError(f"{exc} (expected SERVICE or SERVICE@VERSION)") from None
    if exact and ver == ids.LATEST:
        raise CliError(f"name an exact version: {sid}@X.Y.Z")
    return sid, ver


@hub_app.command("ls")
def ls(hub: str | None = HubOpt, token: str | None = TokenOpt, json_out: bool = JsonOpt) -> None:
    """List the services on the hub with their latest version."""
    from rich.table import Table

    from flowctl.console import human_bytes, print_json
    from flowctl.console import out as stdout

    services = _call(hub, token, lambda c: c.services())
    if json_out:
        print_json(services)
        return
    if not services:
        stdout.print("no services published")
        return
    table = Table("SERVICE", "LATEST", "VERSIONS", "SIZE", "TYPE", box=None)
    for s in services:
        latest = next((v for v in s["versions"] if v["version"] == s["latest_version"]), None)
        table.add_row(s["service_id"], s["latest_version"] or "-", str(len(s["versions"])),
                      human_bytes(latest.get("bundle_size_bytes", latest["size_bytes"])) if latest else "-",
                      s["service_type"])
    stdout.print(table)


@hub_app.command("info")
def info(ref: str = typer.Argument(..., metavar="SERVICE[@VERSION]", help="Default version: latest."),
         files: bool = typer.Option(False, "--files", help="Also list every file."),
         hub: str | None = HubOpt, token: str | None = TokenOpt, json_out: bool = JsonOpt) -> None:
    """Show one version: digest, size, flags, signature, models (and files)."""
    from flowctl.console import human_bytes, print_json
    from flowctl.console import out as stdout

    sid, ver = _ref(ref)
    data = _call(hub, token, lambda c: c.version(sid, ver))
    if json_out:
        print_json(data)
        return
    flags = [f for f, on in (("stable", data["stable"]), ("yanked", data["yanked"]),
                             ("signed", data["signed"])) if on]
    stdout.print(f"{data['service_id']}@{data['version']}  {', '.join(flags) or 'unstable'}")
    bundle_sha, bundle_size = data.get("bundle_sha256", data["sha256"]), data.get("bundle_size_bytes",
                                                                                 data["size_bytes"])
    stdout.print(f"  sha256     {bundle_sha} (.fbundle)")
    stdout.print(f"  size       {human_bytes(bundle_size)} ({human_bytes(data['unpacked_size'])} unpacked, "
                 f"{data['file_count']} files)")
    if "bundle_sha256" in data:
        stdout.print(f"  zip        {data['sha256']} ({human_bytes(data['size_bytes'])}, the seed's .zip)")
    stdout.print(f"  created    {data['created_at']}  published {data['published_at']}")
    for m in data["models"]:
        stdout.print(f"  model      {m['model_id']} {m['version']} ({m['model_type']})")
    if files:
        for f in data["files"]:
            stdout.print(f"  {f['sha256'][:12]}  {human_bytes(f['size']):>10}  {f['path']}")


@hub_app.command("pull")
def pull(ref: str = typer.Argument(..., metavar="SERVICE[@VERSION]", help="Default version: latest."),
         out: Path = typer.Option(Path("."), "-o", "--out", help="Directory to write NAME-VERSION.fbundle into."),
         hub: str | None = HubOpt, token: str | None = TokenOpt, json_out: bool = JsonOpt) -> None:
    """Download a bundle; an interrupted pull resumes from the bytes it has, then verifies."""
    from flowctl.console import byte_progress, human_bytes, print_json
    from flowctl.console import out as stdout

    sid, ver = _ref(ref)

    async def run(client: Any) -> Any:
        from runtime.clients.hub import bundle_digest

        size = bundle_digest(await client.checksum(sid, ver))[1]
        with byte_progress(size, "pulling") as advance:
            return await client.pull(sid, ver, out, progress=advance)

    result = _call(hub, token, run)
    if json_out:
        print_json({"path": str(result.path), "service_id": result.service_id, "version": result.version,
                    "sha256": result.sha256, "size": result.size, "resumed_from": result.resumed_from,
                    "already_complete": result.already_complete})
        return
    how = ("already complete" if result.already_complete else
           f"resumed at {human_bytes(result.resumed_from)}" if result.resumed_from else "downloaded")
    stdout.print(f"{result.sha256}  {result.path}  ({human_bytes(result.size)}, {how}, verified)")


def _flag(ref: str, action: str, hub: str | None, token: str | None, json_out: bool) -> None:
    from flowctl.console import out as stdout
    from flowctl.console import print_json

    sid, ver = _ref(ref, exact=True)
    data = _call(hub, token, lambda c: c.set_flag(sid, ver, action))
    if json_out:
        print_json(data)
        return
    stdout.print(f"{sid}@{ver}: stable={'yes' if data['stable'] else 'no'} "
                 f"yanked={'yes' if data['yanked'] else 'no'}")


@hub_app.command("stable")
def stable(ref: str = typer.Argument(..., metavar="SERVICE@VERSION"),
           undo: bool = typer.Option(False, "--undo", help="Mark it unstable instead."),
           hub: str | None = HubOpt, token: str | None = TokenOpt, json_out: bool = JsonOpt) -> None:
    """Mark a version stable (a candidate for `latest`). Needs the admin key."""
    _flag(ref, "unstable" if undo else "stable", hub, token, json_out)


@hub_app.command("yank")
def yank(ref: str = typer.Argument(..., metavar="SERVICE@VERSION"),
         undo: bool = typer.Option(False, "--undo", help="Un-yank it."),
         hub: str | None = HubOpt, token: str | None = TokenOpt, json_out: bool = JsonOpt) -> None:
    """Yank a version: still downloadable by exact version, never `latest`. Needs the admin key."""
    _flag(ref, "unyank" if undo else "yank", hub, token, json_out)


def _local(data_dir: Path, fn: Any, blobs: str | None = None) -> Any:
    from flowctl.config import load_config
    from flowctl.errors import CliError
    from runtime.hub.blobstore import open_hub_data

    if not (data_dir / "catalog.sqlite3").is_file():
        raise CliError(f"{str(data_dir)!r} is not a hub data dir (no catalog.sqlite3)")
    with open_hub_data(data_dir, load_config(blobs=blobs).blobs) as data:
        return fn(data)


@hub_app.command("gc")
def gc(dry_run: bool = typer.Option(False, "--dry-run", help="Report what would be deleted."),
       data_dir: Path | None = DataDirOpt, blobs: str | None = BlobsOpt, hub: str | None = HubOpt,
       token: str | None = TokenOpt, json_out: bool = JsonOpt) -> None:
    """Delete blobs no version refers to (safe while publishes run). Needs the admin key over HTTP."""
    from flowctl.console import human_bytes, print_json
    from flowctl.console import out as stdout

    if data_dir is not None:
        from hub_store import collect_garbage

        report = _local(data_dir, lambda d: collect_garbage(d.blobs, d.catalog, dry_run=dry_run).to_dict(), blobs)
    else:
        report = _call(hub, token, lambda c: c.gc(dry_run=dry_run))
    if json_out:
        print_json(report)
        return
    verb = "would delete" if report["dry_run"] else "deleted"
    stdout.print(f"{verb} {report['deleted']} of {report['scanned']} blobs ({human_bytes(report['freed_bytes'])}); "
                 f"kept {report['kept_recent']} recent, {report['kept_leased']} held by uploads; "
                 f"{report['temp_removed']} stale temp files")


@hub_app.command("fsck")
def fsck(quarantine: bool = typer.Option(False, "--quarantine", help="Move corrupt blobs to quarantine/."),
         data_dir: Path | None = DataDirOpt, blobs: str | None = BlobsOpt, hub: str | None = HubOpt,
         token: str | None = TokenOpt, json_out: bool = JsonOpt) -> None:
    """Hash every blob; report corrupt and missing ones (exit 1 if any)."""
    from flowctl.console import human_bytes, print_json
    from flowctl.console import out as stdout

    if data_dir is not None:
        from hub_store import fsck as run_fsck

        report = _local(data_dir, lambda d: run_fsck(d.blobs, d.catalog, quarantine=quarantine).to_dict(), blobs)
    else:
        report = _call(hub, token, lambda c: c.fsck(quarantine=quarantine))
    if json_out:
        print_json(report)
    else:
        stdout.print(f"checked {report['checked']} blobs ({human_bytes(report['checked_bytes'])}): "
                     f"{len(report['corrupt'])} corrupt, {len(report['missing'])} missing, "
                     f"{report['unreferenced']} unreferenced")
        for d in report["corrupt"]:
            stdout.print(f"  corrupt  {d}{' (quarantined)' if d in report['quarantined'] else ''}")
        for m in report["missing"]:
            stdout.print(f"  missing  {m['digest']}  ({m['referenced_by']})")
    if not report["ok"]:
        raise typer.Exit(1)


@hub_app.command("ranking")
def ranking(limit: int = typer.Option(10, "--limit", min=1, max=1000, help="How many models."),
            hub: str | None = HubOpt, token: str | None = TokenOpt, json_out: bool = JsonOpt) -> None:
    """The most downloaded models."""
    from flowctl.console import out as stdout
    from flowctl.console import print_json

    rows = _call(hub, token, lambda c: c.ranking(limit))
    if json_out:
        print_json(rows)
        return
    if not rows:
        stdout.print("no downloads yet")
    for r in rows:
        stdout.print(f"{r['rank']:>3}. {r['model_id']}  {r['downloads']} downloads")


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.add_typer(hub_app)
