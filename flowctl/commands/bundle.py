"""`flowctl pack / verify / inspect / unpack`: service bundles. The work is in packer/."""

from __future__ import annotations

from pathlib import Path

import typer

_GEN = " (generates service.json when DIR has none)."
_PANEL = "Generating service.json"
_TRUST_HELP = "Trusted public key (PEM); repeat for several. When given, a valid signature is required."


def pack(
    src: Path = typer.Argument(..., metavar="DIR", help="Service directory (with service.json, or see below)."),
    out: Path = typer.Option(Path("dist"), "-o", "--out", help="Output directory."),
    level: int = typer.Option(3, "--level", help="zstd compression level (1-19)."),
    sign: Path | None = typer.Option(None, "--sign", help="Ed25519 private key (from `flowctl keys gen`)."),
    fmt: str = typer.Option("fbundle", "--format", help="fbundle, or zip to also write the seed-compatible zip."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    service_id: str | None = typer.Option(None, "--id", "--service-id", help="service_id" + _GEN,
                                          rich_help_panel=_PANEL),
    version: str | None = typer.Option(None, "--version", help="version (SemVer)" + _GEN, rich_help_panel=_PANEL),
    service_type: str | None = typer.Option(None, "--type", "--service-type",
                                            help="service_type (default python)" + _GEN, rich_help_panel=_PANEL),
    port: int | None = typer.Option(None, "--port", help="port (the one it listens on)" + _GEN,
                                    rich_help_panel=_PANEL),
    name: str | None = typer.Option(None, "--name", "--service-name", help="service_name" + _GEN,
                                    rich_help_panel=_PANEL),
    description: str | None = typer.Option(None, "--description", help="description" + _GEN,
                                           rich_help_panel=_PANEL),
    start: str | None = typer.Option(None, "--start", "--startup-command",
                                     help="startup_command (default: guessed, e.g. python main.py)" + _GEN,
                                     rich_help_panel=_PANEL),
    health: str | None = typer.Option(None, "--health", help="health_check.endpoint (default /health)" + _GEN,
                                      rich_help_panel=_PANEL),
    model: list[str] = typer.Option([], "--model", metavar="ID:TYPE[:PATH]",
                                    help="models[] (repeatable)" + _GEN, rich_help_panel=_PANEL),
) -> None:
    """Pack DIR into OUT/NAME-VERSION.fbundle and print its SHA-256 and path.

    Files are chosen by .flowctlignore (gitignore globs) plus defaults (.git/,
    __pycache__/, *.pyc, .DS_Store). The same directory always gives the same bytes.

    Without DIR/service.json, one is generated first (as seed 001's pack script does) from
    --id, --version and the other flags below, e.g. `flowctl pack svc --id nmt --version 1.0.0
    --type python --port 5008 --start "python nmt_service.py"`; on a terminal, what is missing
    is asked for. It is written only when complete and valid.
    """
    from flowctl.commands.pack_manifest import ManifestFlags, ensure_manifest, generated_note
    from flowctl.console import byte_progress, echo, print_json, progress_enabled
    from packer.pack import FORMATS, pack_dir
    from packer.source import scan_source

    if not 1 <= level <= 19:
        raise typer.BadParameter(f"{level} is not in 1..19", param_hint="--level")
    if fmt not in FORMATS:
        raise typer.BadParameter(f"{fmt!r} is not one of {', '.join(FORMATS)}", param_hint="--format")
    flags = ManifestFlags(service_id, version, service_type, port, name, description, start, health, list(model))
    generated = ensure_manifest(src, flags)
    try:
        total = 2 * scan_source(src, exclude=out).total_size if progress_enabled() else 0  # read, write
        with byte_progress(total, "packing") as advance:
            result = pack_dir(src, out, level=level, signing_key=sign, fmt=fmt, progress=advance)
    except BaseException:
        if generated is not None:  # a generated service.json the bundle refused is not kept
            generated.unlink(missing_ok=True)
        raise
    if generated is not None:
        typer.echo(generated_note(generated, flags), err=True)
    if json_out:
        print_json({"path": str(result.path), "sha256": result.sha256, "size": result.size,
                    "signed": result.signed, "files": len(result.manifest.files),
                    "zip": str(result.zip_path) if result.zip_path else None})
        return
    echo(f"{result.sha256}  {result.path}")
    if result.zip_path is not None:
        echo(f"zip  {result.zip_path}")


def _trusted(paths: list[Path]) -> list:
    from packer.signing import load_public_key

    return [load_public_key(p) for p in paths]


def verify(
    bundle: Path = typer.Argument(..., metavar="BUNDLE", help="The .fbundle file."),
    sha256: str | None = typer.Option(None, "--sha256", help="Expected SHA-256 of the bundle file."),
    trust: list[Path] = typer.Option([], "--trust", help=_TRUST_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check a bundle end to end: digest, manifest, every file's size and SHA-256, signature.

    Without --sha256, the digest in BUNDLE.sha256 (written by `flowctl pack`) is checked if present.
    """
    from flowctl.console import byte_progress, echo, human_bytes, print_json
    from packer.verify import verify_bundle

    keys = _trusted(trust)
    source = "--sha256" if sha256 is not None else None
    if sha256 is None:
        sha256 = _sidecar_digest(bundle)
        source = bundle.name + ".sha256" if sha256 else None
    with byte_progress(bundle.stat().st_size, "verifying") as advance:
        report = verify_bundle(bundle, expected_sha256=sha256, trusted_keys=keys,
                               require_signature=bool(keys), progress=advance)
    if json_out:
        print_json({"ok": True, "path": str(report.path), "sha256": report.sha256, "size": report.size,
                    "service_id": report.manifest.service_id, "version": report.manifest.version,
                    "files": report.file_count, "total_size": report.total_size,
                    "signature": report.signature, "key_id": report.key_id, "sha256_checked_against": source})
        return
    echo(f"ok {report.path}")
    echo(f"  sha256     {report.sha256}" + (f" (matches {source})" if source else ""))
    echo(f"  service    {report.manifest.service_id} {report.manifest.version}")
    echo(f"  files      {report.file_count} ({human_bytes(report.total_size)} unpacked, "
         f"{human_bytes(report.size)} packed)")
    echo(f"  signature  {report.signature}")


def _sidecar_digest(bundle: Path) -> str | None:
    """The digest that BUNDLE.sha256 records for BUNDLE, if that file exists and names it."""
    sidecar = bundle.with_name(bundle.name + ".sha256")
    try:
        fields = sidecar.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError):
        return None
    if len(fields) == 2 and fields[1].lstrip("*") == bundle.name:
        return fields[0]
    return None


def inspect(
    bundle: Path = typer.Argument(..., metavar="BUNDLE", help="The .fbundle file."),
    trust: list[Path] = typer.Option([], "--trust", help=_TRUST_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print manifest, signature status and files as JSON."),
) -> None:
    """Show a bundle's manifest, models, files and signature (reads only the manifest)."""
    from flowctl.console import human_bytes, print_json, printable
    from flowctl.console import out as stdout
    from packer.reader import open_bundle
    from packer.verify import check_signature

    keys = _trusted(trust)
    with open(bundle, "rb") as f, open_bundle(f, source=str(bundle)) as reader:
        status, kid = check_signature(reader, keys, bool(keys))
        m = reader.manifest
    size = bundle.stat().st_size
    if json_out:
        print_json({"path": str(bundle), "size": size, "signature": status, "key_id": kid,
                    "manifest": m.to_dict()})
        return
    from rich.table import Table
    from rich.text import Text

    # Manifest strings come from the bundle's author: plain text (no rich markup, no terminal escapes).
    stdout.print(Text.assemble((printable(m.service_name), "bold"),
                               printable(f" ({m.service_id} {m.version}, {m.service_type})")))
    lines = [f"  {m.description}"] if m.description else []
    lines += [
        f"  start      {m.startup_command}" + (f"  (port {m.port})" if m.port else ""),
        f"  health     {m.health_check.method} {m.health_check.endpoint}",
        f"  resources  ram {m.resources.ram_mb} MB, vram {m.resources.vram_mb} MB, gpu {m.resources.gpu}",
        f"  created    {m.created_at}",
        f"  size       {human_bytes(m.total_size)} in {len(m.files)} files, {human_bytes(size)} packed",
        f"  signature  {status}",
    ]
    for line in lines:
        stdout.print(Text(printable(line)))
    if m.models:
        models = Table("model", "type", "version", "path", title="models", title_justify="left")
        for spec in m.models:
            models.add_row(*(Text(printable(v)) for v in (spec.model_id, spec.model_type, spec.version,
                                                         spec.path or "-")))
        stdout.print(models)
    files = Table("path", "size", "mode", "sha256", title="files", title_justify="left")
    for entry in m.files:
        files.add_row(Text(entry.path), human_bytes(entry.size), oct(entry.mode)[2:], entry.sha256[:16])
    stdout.print(files)


def unpack(
    bundle: Path = typer.Argument(..., metavar="BUNDLE", help="The .fbundle file."),
    dest: Path = typer.Argument(..., metavar="DEST", help="Destination directory (must not exist or be empty)."),
    trust: list[Path] = typer.Option([], "--trust", help=_TRUST_HELP),
) -> None:
    """Extract a bundle, checking every byte; DEST appears only if everything checks out."""
    from flowctl.console import byte_progress, echo, human_bytes, progress_enabled
    from packer.reader import open_bundle
    from packer.unpack import unpack_bundle

    keys = _trusted(trust)
    total = 0
    if progress_enabled():  # the bar needs the total: read the manifest first
        with open(bundle, "rb") as f, open_bundle(f, source=str(bundle)) as reader:
            total = reader.manifest.total_size
    with byte_progress(total, "unpacking") as advance:
        manifest = unpack_bundle(bundle, dest, trusted_keys=keys, require_signature=bool(keys),
                                 progress=advance)
    echo(f"unpacked {manifest.name}: {len(manifest.files)} files "
         f"({human_bytes(manifest.total_size)}) into {dest}")


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("pack")(pack)
    app.command("verify")(verify)
    app.command("inspect")(inspect)
    app.command("unpack")(unpack)
