"""Where a node keeps things under its data dir, and reading that state back.

    {data}/blobs/sha256/ab/abcd…         local content-addressed store (read-only files)
    {data}/downloads/{hex}.partial       blob downloads in progress (resumed, never appended blindly)
    {data}/locks/                        flock files (service, version, blob, venv)
    {data}/services/{id}/{version}/      installed trees: files 0444/0555 + service.json(.sig)
    {data}/services/{id}/current         relative symlink to `{version}`, swapped atomically
    {data}/services/{id}/.staging-{version}-*   half-built trees (swept under the version lock)
    {data}/venvs/{key}/                  virtualenvs shared by identical requirements
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from packer.manifest import (
    MANIFEST_NAME,
    SERVICE_ID_PATTERN,
    SIGNATURE_NAME,
    Manifest,
    parse_bundle_manifest,
)
from packer.semver import is_version, parse_version
from runtime.node.packages.errors import InvalidReference

CURRENT = "current"
STAGING_PREFIX = ".staging-"
_SERVICE_ID = re.compile(SERVICE_ID_PATTERN)


@dataclass(frozen=True)
class NodeLayout:
    """The paths of one node's data dir; creating it is idempotent."""

    root: Path

    @classmethod
    def create(cls, root: str | os.PathLike[str]) -> NodeLayout:
        """The layout of `root`, with its top-level directories made."""
        layout = cls(Path(root).absolute())
        for d in (layout.services, layout.downloads, layout.locks, layout.venvs):
            d.mkdir(parents=True, exist_ok=True)
        return layout

    @property
    def services(self) -> Path:
        return self.root / "services"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def venvs(self) -> Path:
        return self.root / "venvs"

    def service_dir(self, service: str) -> Path:
        """`services/{id}`; the id is checked, so it can never name another path."""
        if not isinstance(service, str) or not _SERVICE_ID.match(service):
            raise InvalidReference("service id", service)
        return self.services / service

    def version_dir(self, service: str, version: str) -> Path:
        """`services/{id}/{version}`; the version must be SemVer."""
        if not isinstance(version, str) or not is_version(version):
            raise InvalidReference("version", version)
        return self.service_dir(service) / version

    def current_link(self, service: str) -> Path:
        """`services/{id}/current`."""
        return self.services / service / CURRENT

    def new_staging_dir(self, service: str, version: str) -> Path:
        """A fresh, unique staging path for building `version` (not created)."""
        return self.service_dir(service) / f"{STAGING_PREFIX}{version}-{secrets.token_hex(6)}"

    def staging_dirs(self, service: str, version: str) -> list[Path]:
        """Leftover staging dirs of `version` (from a crash or a cancelled install)."""
        d = self.service_dir(service)
        if not d.is_dir():
            return []
        return sorted(d.glob(f"{STAGING_PREFIX}{version}-*"))

    def partial_path(self, digest: str) -> Path:
        """Where blob `digest` is downloaded before it enters the store."""
        return self.downloads / f"{digest}.partial"

    def version_lock(self, service: str, version: str) -> Path:
        self.version_dir(service, version)  # validates both
        return self.locks / f"{service}@{version}.lock"

    def service_lock(self, service: str) -> Path:
        self.service_dir(service)
        return self.locks / f"{service}.lock"

    def blob_lock(self, digest: str) -> Path:
        return self.locks / f"blob-{digest}.lock"

    def current_version(self, service: str) -> str | None:
        """The version `current` points at, or None when there is none (or it is dangling)."""
        try:
            target = os.readlink(self.current_link(service))
        except (FileNotFoundError, OSError):
            return None
        if "/" in target or not is_version(target) or not self.version_dir(service, target).is_dir():
            return None
        return target

    def installed_services(self) -> list[str]:
        """Ids of services with at least one installed version."""
        if not self.services.is_dir():
            return []
        return sorted(p.name for p in self.services.iterdir()
                      if p.is_dir() and _SERVICE_ID.match(p.name) and self.installed_versions(p.name))

    def installed_versions(self, service: str) -> list[str]:
        """Installed versions of `service`, lowest first (SemVer order)."""
        d = self.service_dir(service)
        if not d.is_dir():
            return []
        found = [p.name for p in d.iterdir()
                 if not p.is_symlink() and p.is_dir() and is_version(p.name)
                 and (p / MANIFEST_NAME).is_file()]
        return sorted(found, key=parse_version)

    def read_manifest(self, service: str, version: str) -> tuple[Manifest, bytes]:
        """The installed service.json of `version`, parsed, and its bytes."""
        raw = (self.version_dir(service, version) / MANIFEST_NAME).read_bytes()
        return parse_bundle_manifest(raw, source=f"{service}@{version}/{MANIFEST_NAME}"), raw

    def read_signature(self, service: str, version: str) -> bytes | None:
        """The installed signature of `version`, or None when it was unsigned."""
        try:
            return (self.version_dir(service, version) / SIGNATURE_NAME).read_bytes()
        except FileNotFoundError:
            return None
