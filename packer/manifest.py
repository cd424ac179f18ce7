"""The bundle manifest (`service.json`): schema, validation and canonical form.

The seed's fields (service_id, service_name, version, service_type, port,
description, models, dependencies, startup_command, health_check, created_at)
plus `resources` and `env`, and, added by the packer, `bundle_format` and `files`.

The canonical form (sorted keys, two-space indent, UTF-8, trailing newline) is
what a bundle stores as its first member and what a signature covers; a bundle
whose service.json is not canonical is rejected, so one manifest has exactly one
byte representation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from packer.canonical import canonical_json
from packer.errors import ManifestError
from packer.jsonfields import _Fields, loads_json
from packer.semver import parse_version

BUNDLE_FORMAT = 1
MANIFEST_NAME = "service.json"
SIGNATURE_NAME = "service.json.sig"
RESERVED_NAMES = frozenset({MANIFEST_NAME, SIGNATURE_NAME, "checksum.sha256"})

SERVICE_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
_SERVICE_ID = re.compile(SERVICE_ID_PATTERN)
_MODEL_ID = re.compile(MODEL_ID_PATTERN)
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z$")

# "nmt" is not in the OpenAI vocabulary but is what seed 001's example uses.
MODEL_TYPES = ("chat", "completion", "embedding", "asr", "tts", "image", "nmt")
GPU_MODES = ("none", "optional", "required")
FILE_MODES = (0o644, 0o755)
MAX_PATH_BYTES = 1024
MAX_COMPONENT_BYTES = 255
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
_ENV_NAME = re.compile(ENV_NAME_PATTERN)
# The node sets these for the worker contract (runtime/node/workers/process.py); a bundle cannot.
RESERVED_ENV_PREFIX = "FLOWCTL_"
MAX_ENV_VARS = 256

_SOURCE_FIELDS = {
    "service_id", "service_name", "version", "service_type", "port", "description",
    "models", "dependencies", "startup_command", "health_check", "created_at", "resources", "env",
}
# The seed's service.json carries the package's own sha256, which cannot live inside it.
_IGNORED_SOURCE_FIELDS = {"sha256"}
_BUNDLE_FIELDS = _SOURCE_FIELDS | {"bundle_format", "files"}


@dataclass(frozen=True)
class ModelSpec:
    """A model a service provides."""

    model_id: str
    model_type: str
    version: str
    path: str


@dataclass(frozen=True)
class HealthCheck:
    """How the supervisor decides a started service is ready."""

    endpoint: str = "/health"
    method: str = "GET"
    timeout_s: float = 60.0


@dataclass(frozen=True)
class Resources:
    """What one replica needs from a node."""

    ram_mb: int = 0
    vram_mb: int = 0
    gpu: str = "none"


@dataclass(frozen=True)
class FileEntry:
    """One regular file of a bundle."""

    path: str
    size: int
    mode: int
    sha256: str

    @property
    def executable(self) -> bool:
        """True when the file is installed with mode 0755."""
        return self.mode == 0o755


@dataclass(frozen=True)
class Manifest:
    """A validated service.json; `files` is empty until the packer fills it."""

    service_id: str
    version: str
    startup_command: str
    service_name: str = ""
    service_type: str = "python"
    port: int | None = None
    description: str = ""
    models: tuple[ModelSpec, ...] = ()
    dependencies: tuple[tuple[str, str], ...] = ()
    health_check: HealthCheck = field(default_factory=HealthCheck)
    created_at: str = ""
    resources: Resources = field(default_factory=Resources)
    env: tuple[tuple[str, str], ...] = ()  # sorted (name, value): what the worker's environment adds
    files: tuple[FileEntry, ...] = ()

    @property
    def name(self) -> str:
        """`service_id-version`, the stem of the bundle's file name."""
        return f"{self.service_id}-{self.version}"

    @property
    def total_size(self) -> int:
        """Sum of the sizes of all files (the unpacked size, manifest excluded)."""
        return sum(f.size for f in self.files)

    def with_files(self, files: list[FileEntry] | tuple[FileEntry, ...], created_at: str) -> Manifest:
        """A copy with the packer's fields filled in (files sorted by path)."""
        ordered = tuple(sorted(files, key=lambda f: f.path))
        check_file_table(ordered)
        return replace(self, files=ordered, created_at=created_at)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object form, as stored in a bundle."""
        data: dict[str, Any] = {
            "bundle_format": BUNDLE_FORMAT,
            "service_id": self.service_id,
            "service_name": self.service_name or self.service_id,
            "version": self.version,
            "service_type": self.service_type,
            "description": self.description,
            "models": [m.__dict__.copy() for m in self.models],
            "dependencies": dict(self.dependencies),
            "startup_command": self.startup_command,
            "health_check": self.health_check.__dict__.copy(),
            "created_at": self.created_at,
            "resources": self.resources.__dict__.copy(),
            "files": [f.__dict__.copy() for f in self.files],
        }
        if self.port is not None:
            data["port"] = self.port
        if self.env:  # absent when empty, so manifests without it keep their bytes (and signatures)
            data["env"] = dict(self.env)
        return data

    def canonical_bytes(self) -> bytes:
        """The one byte representation of this manifest (what signatures cover)."""
        return canonical_json(self.to_dict())


def check_path(path: str) -> str:
    """Validate a bundle member path; return it or raise ValueError naming the problem."""
    if not isinstance(path, str) or not path:
        raise ValueError("path is empty")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise ValueError(f"path is longer than {MAX_PATH_BYTES} bytes")
    if _CONTROL.search(path):
        raise ValueError(f"path {path!r} contains a control character")
    if "\\" in path:
        raise ValueError(f"path {path!r} contains a backslash")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise ValueError(f"path {path!r} is absolute")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise ValueError(f"path {path!r} has an empty, '.' or '..' component")
        if len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES:
            raise ValueError(f"path {path!r} has a component longer than {MAX_COMPONENT_BYTES} bytes")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"path {path!r} is not valid UTF-8") from None
    return path


def check_file_table(files: tuple[FileEntry, ...]) -> None:
    """Reject reserved names, duplicates, case-insensitive collisions and file/dir clashes."""
    seen: dict[str, str] = {}
    dirs: set[str] = set()
    for entry in files:
        if entry.path in RESERVED_NAMES:
            raise ManifestError(f"{entry.path!r} is a reserved name", field="files")
        folded = entry.path.casefold()
        if folded in seen:
            other = seen[folded]
            what = "appears twice" if other == entry.path else f"collides with {other!r} ignoring case"
            raise ManifestError(f"{entry.path!r} {what}", field="files")
        seen[folded] = entry.path
        parts = folded.split("/")
        for i in range(1, len(parts)):
            dirs.add("/".join(parts[:i]))
    for folded, path in seen.items():
        if folded in dirs:
            raise ManifestError(f"{path!r} is both a file and a directory", field="files")


def _parse_file(raw: Any, index: int, source: str) -> FileEntry:
    f = _Fields(raw, f"files[{index}]", source)
    f.unknown({"path", "size", "mode", "sha256"})
    path = f.str("path", max_len=MAX_PATH_BYTES)
    try:
        check_path(path)
    except ValueError as exc:
        raise f.error("path", str(exc)) from None
    mode = f.int("mode")
    if mode not in FILE_MODES:
        raise f.error("mode", f"{oct(mode)} is not 0o644 or 0o755")
    return FileEntry(path=path, size=f.int("size"), mode=mode,
                     sha256=f.str("sha256", pattern=_SHA256_HEX))


def manifest_from_dict(data: Any, *, source: str = MANIFEST_NAME, in_bundle: bool = False) -> Manifest:
    """Validate a parsed service.json; `in_bundle` also requires the packer's fields."""
    top = _Fields(data, "", source)
    if in_bundle:
        top.unknown(_BUNDLE_FIELDS)
        fmt = top.int("bundle_format")
        if fmt != BUNDLE_FORMAT:
            raise top.error("bundle_format", f"{fmt} is not supported (this flowctl reads {BUNDLE_FORMAT})")
    else:
        top.unknown(_SOURCE_FIELDS | _IGNORED_SOURCE_FIELDS | {"bundle_format", "files"})

    version = top.str("version", max_len=64)
    try:
        parse_version(version)
    except ValueError:
        raise top.error("version", f"{version!r} is not SemVer (MAJOR.MINOR.PATCH)") from None

    models = []
    model_ids: set[str] = set()
    for i, raw in enumerate(top.list("models")):
        m = _Fields(raw, f"models[{i}]", source)
        m.unknown({"model_id", "model_type", "version", "path"})
        spec = ModelSpec(
            model_id=m.str("model_id", pattern=_MODEL_ID),
            model_type=m.str("model_type", choices=MODEL_TYPES),
            version=m.str("version", version, max_len=64),
            path=m.str("path", "", max_len=MAX_PATH_BYTES),
        )
        if spec.path:
            try:
                check_path(spec.path)
            except ValueError as exc:
                raise m.error("path", str(exc)) from None
        if spec.model_id in model_ids:
            raise m.error("model_id", f"{spec.model_id!r} is declared twice")
        model_ids.add(spec.model_id)
        models.append(spec)

    deps_raw = data.get("dependencies", {})
    if not isinstance(deps_raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in deps_raw.items()
    ):
        raise top.error("dependencies", "must be an object of strings (e.g. {\"python\": \">=3.11\"})")

    hc = _Fields(data.get("health_check", {}), "health_check", source)
    hc.unknown({"endpoint", "method", "timeout_s"})
    endpoint = hc.str("endpoint", "/health", max_len=1024)
    if not endpoint.startswith("/"):
        raise hc.error("endpoint", f"{endpoint!r} must start with '/'")
    health = HealthCheck(endpoint=endpoint, method=hc.str("method", "GET", choices=("GET", "HEAD", "POST")),
                         timeout_s=hc.number("timeout_s", 60.0))

    res = _Fields(data.get("resources", {}), "resources", source)
    res.unknown({"ram_mb", "vram_mb", "gpu"})
    resources = Resources(ram_mb=res.int("ram_mb", 0, hi=2**40), vram_mb=res.int("vram_mb", 0, hi=2**40),
                          gpu=res.str("gpu", "none", choices=GPU_MODES))

    created_at = top.str("created_at", "" if not in_bundle else None, max_len=40)
    if created_at and not _TIMESTAMP.match(created_at):
        raise top.error("created_at", f"{created_at!r} is not an RFC 3339 UTC time (YYYY-MM-DDTHH:MM:SSZ)")

    env = _parse_env(data.get("env", {}), source)

    port = None
    if "port" in data:
        port = top.int("port", lo=1, hi=65535)

    files: tuple[FileEntry, ...] = ()
    if in_bundle:
        files = tuple(_parse_file(raw, i, source) for i, raw in enumerate(top.list("files")))
        if [f.path for f in files] != sorted(f.path for f in files):
            raise top.error("files", "is not sorted by path")
        check_file_table(files)

    startup = top.str("startup_command", max_len=4096)
    if not startup.strip():
        raise top.error("startup_command", "is empty")
    service_id = top.str("service_id", pattern=_SERVICE_ID)
    return Manifest(
        service_id=service_id,
        version=version,
        startup_command=startup,
        service_name=top.str("service_name", "", max_len=256) or service_id,
        service_type=top.str("service_type", "python", max_len=64),
        port=port,
        description=top.str("description", ""),
        models=tuple(models),
        dependencies=tuple(sorted(deps_raw.items())),
        health_check=health,
        created_at=created_at,
        resources=resources,
        env=env,
        files=files,
    )


def _parse_env(raw: Any, source: str) -> tuple[tuple[str, str], ...]:
    """`env`: an object of variable names to string values, none of them FLOWCTL_*."""
    env = _Fields(raw, "env", source)
    if len(raw) > MAX_ENV_VARS:
        raise ManifestError(f"has {len(raw)} variables, more than {MAX_ENV_VARS}", field="env", source=source)
    for name in raw:
        if not _ENV_NAME.match(name):
            raise env.error(name, f"{name!r} is not a variable name (letters, digits, _)")
        if name.startswith(RESERVED_ENV_PREFIX):
            raise env.error(name, f"{RESERVED_ENV_PREFIX}* variables are set by the node, not the bundle")
        env.str(name)
    return tuple(sorted(raw.items()))


def parse_source_manifest(raw: bytes, *, source: str = MANIFEST_NAME) -> Manifest:
    """Parse the service.json of a source directory (no `files` yet)."""
    return manifest_from_dict(loads_json(raw, source=source), source=source)


def parse_bundle_manifest(raw: bytes, *, source: str = MANIFEST_NAME) -> Manifest:
    """Parse the service.json stored in a bundle; it must be complete and canonical."""
    manifest = manifest_from_dict(loads_json(raw, source=source), source=source, in_bundle=True)
    if manifest.canonical_bytes() != raw:
        raise ManifestError("is not in canonical form (was it edited after packing?)", source=source)
    for model in manifest.models:
        if model.path and not any(
            f.path == model.path or f.path.startswith(model.path + "/") for f in manifest.files
        ):
            raise ManifestError(f"{model.path!r} names no file in the bundle",
                                field=f"models[{model.model_id}].path", source=source)
    return manifest
