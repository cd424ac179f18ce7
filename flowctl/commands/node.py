"""`flowctl node install / ls / use / uninstall / verify / gc`: the node's package manager.

Thin: each command resolves its settings (flag > env > config file), calls runtime.node,
and prints. trio/httpx are imported inside the commands so `flowctl --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

node_app = typer.Typer(
    name="node",
    help="Install service versions from a hub onto this node, switch, verify, remove.",
    no_args_is_help=True,
)

_DATA_HELP = "Node data dir (env FLOWCTL_DATA_DIR, config data_dir)."
_TRUST_HELP = ("Trusted public key (PEM) or directory of *.pub; repeatable (env FLOWCTL_TRUSTED_KEYS, "
               "config trusted_keys). When any is configured, a valid signature is required.")
_JSON_HELP = "Print the result as JSON."


def _layout(data_dir: Path | None):
    from flowctl.config import load_config
    from runtime.node import NodeLayout

    return NodeLayout.create(load_config(data_dir=data_dir).data_dir)


def _keys(trust: list[Path]) -> tuple[Any, ...]:
    from flowctl.config import load_config
    from runtime.node import load_trusted_keys

    return load_trusted_keys(load_config(trusted_keys=trust or None).trusted_keys)


def _split(ref: str) -> tuple[str, str | None]:
    from hub_store import ids

    service, _, version = ref.partition("@")
    ids.service_id(service)
    if version:
        ids.version_ref(version)
    return service, version or None


def _split_exact(ref: str) -> tuple[str, str]:
    from flowctl.errors import CliError

    service, version = _split(ref)
    if version is None:
        raise CliError(f"{ref!r}: give SERVICE@VERSION")
    return service, version


@node_app.command("install")
def install(
    ref: str = typer.Argument(..., metavar="SERVICE[@VERSION]", help="What to install (default: latest)."),
    hub: str | None = typer.Option(None, "--hub", help="Hub URL (env FLOWCTL_HUB_URL, config hub_url)."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=_DATA_HELP),
    trust: list[Path] = typer.Option([], "--trust", help=_TRUST_HELP),
    allow_downgrade: bool = typer.Option(False, "--allow-downgrade",
                                         help="Allow installing a version lower than the current one."),
    keep: int = typer.Option(3, "--keep", min=0, help="Keep the newest N versions (0: keep all)."),
    no_activate: bool = typer.Option(False, "--no-activate", help="Install but leave `current` as is."),
    no_venv: bool = typer.Option(False, "--no-venv", help="Skip the requirements.txt virtualenv."),
    json_out: bool = typer.Option(False, "--json", help=_JSON_HELP),
) -> None:
    """Install SERVICE[@VERSION]: fetch only missing blobs (resumable), verify, switch `current`.

    Files the node already has (from other versions) are hard-linked, not downloaded.
    A crash or Ctrl-C leaves the previous version current; running again resumes.
    """
    import trio

    from flowctl.config import load_config
    from flowctl.console import human_bytes, print_json
    from flowctl.console import out as stdout
    from flowctl.errors import CliError
    from runtime.node import InstallOptions
    from runtime.node import install as run_install

    if ref.endswith(".fbundle") or "/" in ref or Path(ref).is_file():
        raise CliError(f"{ref!r} is a file: `node install` takes SERVICE[@VERSION] from a hub; "
                       f"publish the bundle first (flowctl publish {ref})")
    service, version = _split(ref)
    config = load_config(hub_url=hub, data_dir=data_dir, trusted_keys=trust or None)
    hub_url = config.hub_url
    if not hub_url:
        raise CliError("no hub URL: pass --hub URL or set FLOWCTL_HUB_URL")
    from runtime.node import NodeLayout, load_trusted_keys

    layout = NodeLayout.create(config.data_dir)
    options = InstallOptions(allow_downgrade=allow_downgrade, activate=not no_activate, keep=keep,
                             trusted_keys=load_trusted_keys(config.trusted_keys), venv=not no_venv)
    with _Bar(f"{service}") as hook:
        report = trio.run(lambda: run_install(layout, hub_url, service, version or "latest",
                                              options=options, on_progress=hook))
    if json_out:
        print_json(report.to_dict())
        return
    what = "already installed" if report.already_installed else "installed"
    stdout.print(f"{what} {report.service}@{report.version} in {report.seconds:.2f} s: "
                 f"downloaded {human_bytes(report.downloaded_bytes)}, "
                 f"reused {human_bytes(report.reused_bytes)}")
    if report.activated:
        stdout.print(f"current -> {report.version}" +
                     (f" (was {report.previous})" if report.previous else ""))
    if report.removed_versions:
        stdout.print(f"removed old versions: {', '.join(report.removed_versions)}")


class _Bar:
    """A byte progress bar on stderr (terminal only), fed `(done, total)`."""

    def __init__(self, description: str):
        from flowctl.console import progress_enabled

        self.description = description
        self.enabled = progress_enabled()
        self.progress: Any = None
        self.task: Any = None

    def __enter__(self):
        return self.update

    def update(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        if self.progress is None:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            from flowctl.console import err

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     DownloadColumn(), TransferSpeedColumn(),
                                     TimeRemainingColumn(), console=err, transient=True)
            self.task = self.progress.add_task(self.description, total=total)
            self.progress.start()
        self.progress.update(self.task, completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


@node_app.command("ls")
def ls(
    data_dir: Path | None = typer.Option(None, "--data-dir", help=_DATA_HELP),
    json_out: bool = typer.Option(False, "--json", help=_JSON_HELP),
) -> None:
    """List installed services and versions; `*` marks the current one."""
    from dataclasses import asdict

    from flowctl.console import human_bytes, print_json
    from flowctl.console import out as stdout
    from runtime.node import list_installed

    rows = list_installed(_layout(data_dir))
    if json_out:
        print_json([asdict(r) for r in rows])
        return
    if not rows:
        stdout.print("no services installed")
        return
    for r in rows:
        mark = "*" if r.current else " "
        stdout.print(f"{mark} {r.service:<24} {r.version:<16} {human_bytes(r.size):>10}  {r.files} files")


@node_app.command("use")
def use(
    ref: str = typer.Argument(..., metavar="SERVICE@VERSION", help="The installed version to make current."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=_DATA_HELP),
) -> None:
    """Switch `current` to an installed version (atomically; rollbacks allowed)."""
    import trio

    from flowctl.console import out as stdout
    from runtime.node import use as run_use

    service, version = _split_exact(ref)
    layout = _layout(data_dir)
    result = trio.run(run_use, layout, service, version)
    stdout.print(f"current -> {version}" + (f" (was {result.previous})" if result.previous else ""))


@node_app.command("uninstall")
def uninstall(
    ref: str = typer.Argument(..., metavar="SERVICE[@VERSION]", help="A version, or all of a service."),
    force: bool = typer.Option(False, "--force", help="Also remove the current version."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=_DATA_HELP),
    json_out: bool = typer.Option(False, "--json", help=_JSON_HELP),
) -> None:
    """Remove installed versions; the current one only with --force. Blobs stay until `gc`."""
    import trio

    from flowctl.console import out as stdout
    from flowctl.console import print_json
    from runtime.node import uninstall as run_uninstall

    service, version = _split(ref)
    removed = trio.run(lambda: run_uninstall(_layout(data_dir), service, version, force=force))
    if json_out:
        print_json({"service": service, "removed": removed})
        return
    stdout.print(f"removed {service} {', '.join(removed)}")


@node_app.command("verify")
def verify(
    ref: str = typer.Argument(..., metavar="SERVICE[@VERSION]", help="Default: the current version."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=_DATA_HELP),
    trust: list[Path] = typer.Option([], "--trust", help=_TRUST_HELP),
    json_out: bool = typer.Option(False, "--json", help=_JSON_HELP),
) -> None:
    """Re-hash an installed tree against its manifest; name every changed, missing or extra file."""
    from dataclasses import asdict

    from flowctl.console import human_bytes, print_json
    from flowctl.console import out as stdout
    from runtime.node import verify_installed

    service, version = _split(ref)
    report = verify_installed(_layout(data_dir), service, version, trusted_keys=_keys(trust))
    if json_out:
        print_json({"ok": True, **asdict(report)})
        return
    signed = f", signed by {report.signed_by}" if report.signed_by else ""
    stdout.print(f"ok {report.service}@{report.version}: {report.files} files, "
                 f"{human_bytes(report.bytes)}{signed}")


@node_app.command("gc")
def gc(
    data_dir: Path | None = typer.Option(None, "--data-dir", help=_DATA_HELP),
    grace: float = typer.Option(3600.0, "--grace", min=0,
                                help="Keep unused blobs younger than this many seconds."),
    json_out: bool = typer.Option(False, "--json", help=_JSON_HELP),
) -> None:
    """Drop local blobs no installed version uses, and abandoned partial downloads."""
    from dataclasses import asdict

    from flowctl.console import human_bytes, print_json
    from flowctl.console import out as stdout
    from runtime.node import gc as run_gc

    report = run_gc(_layout(data_dir), grace=grace)
    if json_out:
        print_json(asdict(report))
        return
    stdout.print(f"removed {report.blobs} blobs and {report.partials} partials, "
                 f"freed {human_bytes(report.bytes)}")


def register(app: typer.Typer) -> None:
    """Attach `flowctl node …` to the root app."""
    app.add_typer(node_app, name="node")
