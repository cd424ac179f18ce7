"""`flowctl pack DIR` without DIR/service.json: one is generated from flags, or asked for on a terminal."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import typer

FLAG_NAMES = {"service_id": "--id", "version": "--version", "service_type": "--type", "port": "--port",
              "service_name": "--name", "description": "--description", "startup_command": "--start",
              "health": "--health", "models": "--model"}


@dataclass
class ManifestFlags:
    """The values of pack's service.json flags (None: not given)."""

    service_id: str | None = None
    version: str | None = None
    service_type: str | None = None
    port: int | None = None
    service_name: str | None = None
    description: str | None = None
    startup_command: str | None = None
    health: str | None = None
    models: list[str] = field(default_factory=list)

    def given(self) -> list[str]:
        """The flags given, by name."""
        return [FLAG_NAMES[f.name] for f in fields(self) if getattr(self, f.name) not in (None, [])]


def interactive() -> bool:
    """True when a person can answer prompts (stdin and stderr are terminals)."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def ensure_manifest(src: Path, flags: ManifestFlags) -> Path | None:
    """Leave SRC/service.json in place, or create it from `flags` (prompting on a terminal).

    Returns the path of a generated file (the caller removes it if packing then fails),
    None when there was one. Usage errors (exit 2): generation flags beside an existing
    service.json; required fields missing without a terminal. Nothing is written unless the
    whole file is valid.
    """
    from packer.errors import ManifestError
    from packer.manifest import MANIFEST_NAME

    path = src / MANIFEST_NAME
    if not src.is_dir():
        return None  # pack itself says what is wrong with DIR
    if path.exists():
        if flags.given():
            _usage(f"{path} exists; {', '.join(flags.given())} only generate a missing one: edit the file instead")
        return None
    from packer.scaffold import draft_manifest, guess_startup_command, write_new_manifest

    service_type = flags.service_type or "python"
    start = flags.startup_command or guess_startup_command(src, service_type)
    values: dict[str, Any] = {"service_id": flags.service_id, "version": flags.version, "startup_command": start}
    missing = [FLAG_NAMES[k] for k, v in values.items() if not v]
    asked = False
    if missing:
        if not interactive():
            need = " and ".join(missing) if len(missing) < 3 else f"{missing[0]}, {missing[1]} and {missing[2]}"
            _usage(f"{src} has no {MANIFEST_NAME}: pass {need} to generate one (see flowctl pack --help), "
                   "or run on a terminal to be asked")
        values, service_type, flags.port = _ask(src, flags, values, service_type)
        asked = True
    try:
        raw = draft_manifest(_fields(flags, values, service_type))
    except ManifestError as exc:
        flag = FLAG_NAMES.get((exc.field or "").split("[")[0].split(".")[0])
        if exc.field == "health_check.endpoint":
            flag = "--health"
        raise ManifestError(f"{flag}: {exc.problem}" if flag else str(exc), source="flowctl pack") from None
    if asked:
        typer.echo(raw.decode().rstrip(), err=True)
        if not typer.confirm(f"Write {path} and pack?", default=True, err=True):
            _usage("nothing written")
    return write_new_manifest(src, raw)


def generated_note(path: Path, flags: ManifestFlags) -> str:
    """What `pack` says after packing with a generated service.json."""
    import json

    if flags.startup_command or interactive():
        return f"wrote {path}"
    start = json.loads(path.read_bytes())["startup_command"]
    return f"wrote {path} (startup_command {start!r} was guessed; --start sets it)"


def _fields(flags: ManifestFlags, values: dict[str, Any], service_type: str) -> dict[str, Any]:
    from packer.scaffold import parse_model_option

    data: dict[str, Any] = {
        "service_id": values["service_id"], "service_name": flags.service_name, "version": values["version"],
        "service_type": service_type, "port": flags.port, "description": flags.description,
        "models": [{**parse_model_option(m), "version": values["version"]} for m in flags.models],
        "startup_command": values["startup_command"],
    }
    if flags.health:
        data["health_check"] = {"endpoint": flags.health, "method": "GET"}
    return data


def _ask(src: Path, flags: ManifestFlags, values: dict[str, Any],
         service_type: str) -> tuple[dict[str, Any], str, int | None]:
    """Prompt (on stderr) for what the flags left open, with defaults where sensible."""
    import re

    from packer.scaffold import guess_startup_command

    typer.echo(f"{src} has no service.json; answer a few questions to generate one (Ctrl-C: nothing written).",
               err=True)
    if not values["service_id"]:
        default = re.sub(r"[^a-z0-9._-]+", "-", src.resolve().name.lower()).strip("-._") or None
        values["service_id"] = typer.prompt("service id", default=default, err=True)
    if not values["version"]:
        values["version"] = typer.prompt("version", default="1.0.0", err=True)
    if flags.service_type is None:
        service_type = typer.prompt("service type", default=service_type, err=True)
    if flags.startup_command is None:
        values["startup_command"] = typer.prompt("startup command", err=True,
                                                 default=guess_startup_command(src, service_type))
    port = flags.port
    while port is None:
        raw = typer.prompt("port it listens on (empty: the node assigns one)", default="", show_default=False,
                           err=True).strip()
        if not raw:
            break
        if raw.isdigit() and 1 <= int(raw) <= 65535:
            port = int(raw)
        else:
            typer.echo(f"{raw!r} is not a port (1-65535)", err=True)
    return values, service_type, port


def _usage(message: str) -> None:
    from flowctl.console import fail

    fail(message)
    raise typer.Exit(2)
