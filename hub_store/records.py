"""What the catalog hands out: frozen records of services, versions, files and models."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from packer.semver import parse_version


@dataclass(frozen=True)
class VersionRecord:
    """One published version of a service."""

    service_id: str
    version: str
    sha256: str
    size_bytes: int
    manifest_sha256: str
    unpacked_size: int
    file_count: int
    created_at: str
    published_at: str
    signed: bool
    signer: str | None
    stable: bool
    yanked: bool
    zip_sha256: str | None
    zip_size: int | None


@dataclass(frozen=True)
class ServiceRecord:
    """A service and its versions, newest SemVer first."""

    service_id: str
    service_name: str
    service_type: str
    port: int | None
    description: str
    versions: tuple[VersionRecord, ...]
    latest: str | None


@dataclass(frozen=True)
class FileRecord:
    """One file of a version: path -> blob digest."""

    path: str
    size: int
    mode: int
    sha256: str


@dataclass(frozen=True)
class ModelRecord:
    """A model as provided by one service version."""

    model_id: str
    model_version: str
    model_type: str
    service_id: str
    version: str
    path: str


@dataclass(frozen=True)
class NewVersion:
    """Everything publish inserts for one version, in one transaction."""

    service_id: str
    service_name: str
    service_type: str
    port: int | None
    description: str
    version: str
    sha256: str
    size_bytes: int
    manifest_sha256: str
    created_at: str
    stable: bool
    signature: bytes | None
    signer: str | None
    files: tuple[FileRecord, ...]
    models: tuple[ModelRecord, ...]


def _newest_first(records: Iterable[VersionRecord]) -> list[VersionRecord]:
    return sorted(records, key=lambda r: parse_version(r.version), reverse=True)


def pick_latest(records: Iterable[VersionRecord]) -> VersionRecord | None:
    """The highest SemVer among stable, non-yanked versions."""
    candidates = [r for r in records if r.stable and not r.yanked]
    return _newest_first(candidates)[0] if candidates else None
