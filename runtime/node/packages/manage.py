"""Listing, switching, uninstalling and collecting garbage on a node."""

from __future__ import annotations

import os
import time
from collections.abc import Collection
from dataclasses import dataclass

import trio

from hub_store.blobs import LocalBlobStore
from runtime.node.packages.activate import ActivateResult, activate, remove_version_tree
from runtime.node.packages.errors import NotInstalled, VersionInUse
from runtime.node.packages.fsutil import remove_tree
from runtime.node.packages.layout import STAGING_PREFIX, NodeLayout
from runtime.node.packages.lock import hold_lock, release, try_lock
from runtime.node.packages.venv import venv_key

GC_GRACE = 3600.0


@dataclass(frozen=True)
class InstalledVersion:
    """One installed version: its size on disk (apparent, shared blobs counted) and whether current."""

    service: str
    version: str
    size: int
    files: int
    current: bool


def list_installed(layout: NodeLayout) -> list[InstalledVersion]:
    """Every installed version of every service, lowest version first per service."""
    out = []
    for service in layout.installed_services():
        current = layout.current_version(service)
        for version in layout.installed_versions(service):
            manifest, _ = layout.read_manifest(service, version)
            out.append(InstalledVersion(service, version, manifest.total_size,
                                        len(manifest.files), version == current))
    return out


async def use(layout: NodeLayout, service: str, version: str) -> ActivateResult:
    """Make an installed `version` current (a deliberate rollback is allowed)."""
    return await activate(layout, service, version)


async def uninstall(layout: NodeLayout, service: str, version: str | None = None, *,
                    force: bool = False, running: Collection[str] | None = None) -> list[str]:
    """Remove one version, or all of `service`; a running one only with `force`.

    `running` names the versions a supervisor knows are running; without it (the
    CLI alone cannot know) the current version is presumed to be running.
    """
    async with hold_lock(layout.service_lock(service)):
        installed = layout.installed_versions(service)
        if version is not None and version not in installed:
            raise NotInstalled(service, version)
        if not installed:
            raise NotInstalled(service)
        doomed = [version] if version is not None else installed
        current = layout.current_version(service)
        busy = set(running) if running is not None else {current}
        in_use = [v for v in doomed if v in busy]
        if in_use and not force:
            raise VersionInUse(service, in_use[0])
        return await trio.to_thread.run_sync(_remove, layout, service, doomed, current)


def _remove(layout: NodeLayout, service: str, doomed: list[str], current: str | None) -> list[str]:
    if current in doomed:
        layout.current_link(service).unlink(missing_ok=True)
    for v in doomed:
        remove_version_tree(layout, service, v)
    service_dir = layout.service_dir(service)
    if not layout.installed_versions(service):
        remove_tree(service_dir)
    return doomed


@dataclass(frozen=True)
class GcReport:
    """What `gc` removed."""

    blobs: int
    bytes: int
    partials: int


def gc(layout: NodeLayout, *, grace: float = GC_GRACE) -> GcReport:
    """Drop blobs no installed version uses (older than `grace` s), unused venvs, leftovers.

    Blocking: run it in a thread from async code. The grace period protects a blob an
    install in another process has just fetched but not yet linked.
    """
    store = LocalBlobStore(layout.root)
    used: set[str] = set()
    venvs: set[str | None] = set()
    for service in layout.installed_services():
        for version in layout.installed_versions(service):
            manifest, _ = layout.read_manifest(service, version)
            used.update(f.sha256 for f in manifest.files)
            venvs.add(venv_key(manifest))
    _sweep_venvs(layout, venvs)
    cutoff = time.time() - grace
    blobs = freed = 0
    for info in list(store.iter_blobs()):
        if info.digest not in used and info.mtime < cutoff and store.delete(info.digest):
            blobs += 1
            freed += info.size
    _sweep_staging(layout)
    partials = 0
    for entry in os.scandir(layout.downloads):
        if not entry.name.endswith(".partial") or entry.stat().st_mtime >= cutoff:
            continue
        digest = entry.name.removesuffix(".partial")
        lock = layout.blob_lock(digest)
        fd = try_lock(lock)
        if fd is None:  # being downloaded right now
            continue
        try:
            freed += entry.stat().st_size
            os.unlink(entry.path)
            if os.path.exists(entry.path + ".etag"):
                os.unlink(entry.path + ".etag")
            partials += 1
        finally:
            release(lock, fd)
    return GcReport(blobs, freed, partials)


def _sweep_staging(layout: NodeLayout) -> None:
    """Remove staging dirs left by crashes, each only while its version lock is free."""
    if not layout.services.is_dir():
        return
    for service_dir in layout.services.iterdir():
        for staging in service_dir.glob(f"{STAGING_PREFIX}*"):
            version = staging.name[len(STAGING_PREFIX):].rsplit("-", 1)[0]
            lock = layout.version_lock(service_dir.name, version)
            fd = try_lock(lock)
            if fd is None:  # an install of that version is running
                continue
            try:
                remove_tree(staging)
            finally:
                release(lock, fd)


def _sweep_venvs(layout: NodeLayout, keep: set[str | None]) -> None:
    """Remove virtualenvs no installed version uses, each only while its lock is free."""
    if not layout.venvs.is_dir():
        return
    for venv in layout.venvs.iterdir():
        if venv.name in keep:
            continue
        lock = layout.locks / f"venv-{venv.name}.lock"
        fd = try_lock(lock)
        if fd is None:  # being built right now
            continue
        try:
            remove_tree(venv)
        finally:
            release(lock, fd)
