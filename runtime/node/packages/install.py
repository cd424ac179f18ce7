"""Install one service version from a hub: reuse local blobs, fetch the rest, stage, activate.

Order of events (each step survives a kill -9; the previous `current` is never touched
before the new tree is complete and fsynced):
  1. fetch manifest (+ signature); refuse untrusted or downgrading versions;
  2. under the version lock: sweep this version's old staging dirs, check disk space,
     download the missing blobs (bounded parallelism, each under its own blob lock);
  3. build `.staging-{version}-*` from hard links into the store, fsync, rename to `{version}`;
  4. build the requirements venv if any; under the service lock, swap `current`, prune old versions.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

from hub_store.blobs import LocalBlobStore
from packer.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest, parse_bundle_manifest
from packer.semver import parse_version
from runtime.clients.errors import HubRequestFailed
from runtime.clients.hub import HubClient
from runtime.node.packages import fsutil
from runtime.node.packages.activate import activate
from runtime.node.packages.download import FetchPolicy, fetch_blob
from runtime.node.packages.errors import DowngradeRefused, NotEnoughSpace, PackageError
from runtime.node.packages.layout import NodeLayout
from runtime.node.packages.lock import hold_lock
from runtime.node.packages.trust import check_trust
from runtime.node.packages.venv import ensure_venv, venv_key

PARALLEL = 4
DISK_MARGIN = 64 << 20
KEEP_VERSIONS = 3
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@dataclass(frozen=True)
class InstallOptions:
    """How to install; the defaults are what `flowctl node install` uses."""

    allow_downgrade: bool = False
    activate: bool = True
    keep: int = KEEP_VERSIONS
    trusted_keys: tuple[Any, ...] = ()
    parallel: int = PARALLEL
    disk_margin: int = DISK_MARGIN
    free_space: Callable[[Path], int] = fsutil.free_space
    policy: FetchPolicy = field(default_factory=FetchPolicy)
    venv: bool = True


@dataclass(frozen=True)
class InstallReport:
    """What an install did, for people and for `--json`."""

    service: str
    version: str
    downloaded_bytes: int
    reused_bytes: int
    resumed_bytes: int
    total_bytes: int
    files: int
    seconds: float
    already_installed: bool
    activated: bool
    previous: str | None
    signed_by: str | None
    venv: str | None
    removed_versions: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        data = asdict(self)
        data["removed_versions"] = list(self.removed_versions)
        return data


ProgressHook = Callable[[int, int], None]


@dataclass
class _Tally:
    total: int = 0
    done: int = 0
    downloaded: int = 0
    resumed: int = 0
    hook: ProgressHook | None = None

    def advance(self, n: int) -> None:
        self.done += n
        if self.hook is not None:
            self.hook(self.done, self.total)


async def install(layout: NodeLayout, hub_url: str, service: str, version: str = "latest", *,
                  options: InstallOptions = InstallOptions(),
                  hub: HubClient | None = None,
                  on_progress: ProgressHook | None = None) -> InstallReport:
    """Install `service@version` from the hub at `hub_url` into `layout`; see the module doc.

    Error handling: TrustRefused, DowngradeRefused, NotEnoughSpace, DownloadFailed,
    BlobMismatch (all PackageError), HubUnreachable and HubRequestFailed (HubError),
    PackerError for a bad manifest.
    Cancellation: leaves only resumable partials and staging dirs the next run sweeps.
    """
    started = time.monotonic()
    if hub is None:
        async with HubClient(hub_url) as own:
            return await install(layout, hub_url, service, version, options=options,
                                 hub=own, on_progress=on_progress)
    layout.service_dir(service)  # validate before the id goes into a URL
    if version != "latest":
        layout.version_dir(service, version)
    fetched = await hub.fetch_manifest(service, version)
    manifest = parse_bundle_manifest(fetched.raw, source=f"{service}@{version}/{MANIFEST_NAME}")
    if manifest.service_id != service or (version != "latest" and manifest.version != version):
        raise HubRequestFailed("GET", fetched.url, 200, f"asked for {service}@{version}, got "
                               f"{manifest.service_id}@{manifest.version}")
    if fetched.version is not None and fetched.version != manifest.version:
        raise HubRequestFailed("GET", fetched.url, 200, f"the hub resolved {version!r} to "
                               f"{fetched.version!r} but served the manifest of {manifest.version!r}")
    version = manifest.version
    signature = await hub.fetch_signature(service, version)
    signed_by = check_trust(service, version, fetched.raw, signature, options.trusted_keys)
    _check_downgrade(layout, service, version, options)

    store = LocalBlobStore(layout.root)
    tally = _Tally(hook=on_progress)
    target = layout.version_dir(service, version)
    async with hold_lock(layout.version_lock(service, version)):
        already = target.is_dir()
        if already:
            _check_same(layout, service, version, fetched.raw)
            reused = manifest.total_size
        else:
            reused = await _build_tree(layout, store, hub, manifest, fetched.raw, signature,
                                       options, tally)
    venv = None
    key = venv_key(manifest)
    if key is not None and options.venv:
        venv = str(await ensure_venv(layout, target, key))
    previous = layout.current_version(service)
    activated = False
    removed: tuple[str, ...] = ()
    if options.activate:
        result = await activate(layout, service, version, keep=options.keep,
                                check=lambda cur: _refuse_downgrade(service, version, cur, options))
        activated, previous, removed = result.changed, result.previous, result.removed
    return InstallReport(
        service=service, version=version, downloaded_bytes=tally.downloaded,
        reused_bytes=reused, resumed_bytes=tally.resumed, total_bytes=manifest.total_size,
        files=len(manifest.files), seconds=round(time.monotonic() - started, 3),
        already_installed=already, activated=activated, previous=previous, signed_by=signed_by,
        venv=venv, removed_versions=tuple(removed),
    )


def _refuse_downgrade(service: str, version: str, current: str | None,
                      options: InstallOptions) -> None:
    if current is not None and not options.allow_downgrade and \
            parse_version(version) < parse_version(current):
        raise DowngradeRefused(service, version, current)


def _check_downgrade(layout: NodeLayout, service: str, version: str,
                     options: InstallOptions) -> None:
    _refuse_downgrade(service, version, layout.current_version(service), options)


def _check_same(layout: NodeLayout, service: str, version: str, raw: bytes) -> None:
    _, installed = layout.read_manifest(service, version)
    if installed != raw:
        raise PackageError(f"{service}@{version} is installed with another manifest than the hub's "
                        "(uninstall it first)")


async def _build_tree(layout: NodeLayout, store: LocalBlobStore, hub: HubClient,
                      manifest: Manifest, raw: bytes, signature: bytes | None,
                      options: InstallOptions, tally: _Tally) -> int:
    """Download what is missing and rename a complete, fsynced tree into place; reused bytes."""
    service, version = manifest.service_id, manifest.version
    for leftover in layout.staging_dirs(service, version):
        await trio.to_thread.run_sync(_remove_staging, leftover)
    sizes = {f.sha256: f.size for f in manifest.files}
    missing = {d: s for d, s in sizes.items() if not store.exists(d)}
    reused = sum(f.size for f in manifest.files if f.sha256 not in missing)
    _check_space(layout, manifest, missing, options)
    tally.total = sum(missing.values())
    limiter = trio.CapacityLimiter(max(1, options.parallel))

    async def one(digest: str, size: int) -> None:
        async with limiter, hold_lock(layout.blob_lock(digest)):
            if store.exists(digest):  # another process fetched it meanwhile
                tally.advance(size)
                return
            if size == 0 and digest == EMPTY_SHA256:
                await trio.to_thread.run_sync(_store_empty, layout, store)
                return
            result = await fetch_blob(hub.http, hub.blob_url(digest), digest, size,
                                      layout.partial_path(digest), store.adopt,
                                      policy=options.policy, on_progress=tally.advance,
                                      store_client=hub.store_http)
            tally.downloaded += result.downloaded
            tally.resumed += result.resumed

    try:
        async with trio.open_nursery() as nursery:
            for digest, size in sorted(missing.items(), key=lambda kv: -kv[1]):
                nursery.start_soon(one, digest, size)
    except BaseExceptionGroup as group:
        raise _first_failure(group) from None
    staging = layout.new_staging_dir(service, version)
    await trio.to_thread.run_sync(_stage, store, manifest, raw, signature, staging,
                                  layout.version_dir(service, version))
    return reused


def _first_failure(group: BaseExceptionGroup) -> BaseException:
    """The first real error of a download nursery (the others were cancelled by it)."""
    _, rest = group.split(trio.Cancelled)
    if rest is None:
        return group  # only cancellation: let it propagate unchanged
    failure: BaseException = rest
    while isinstance(failure, BaseExceptionGroup):
        failure = failure.exceptions[0]
    return failure


def _check_space(layout: NodeLayout, manifest: Manifest, missing: dict[str, int],
                 options: InstallOptions) -> None:
    missing_bytes = sum(missing.values()) - sum(_partial_size(layout, d) for d in missing)
    needed = missing_bytes + manifest.total_size + options.disk_margin
    free = options.free_space(layout.root)
    if needed > free:
        raise NotEnoughSpace(str(layout.root), needed, free, missing_bytes, manifest.total_size,
                             options.disk_margin)


def _partial_size(layout: NodeLayout, digest: str) -> int:
    try:
        return layout.partial_path(digest).stat().st_size
    except FileNotFoundError:
        return 0


def _store_empty(layout: NodeLayout, store: LocalBlobStore) -> None:
    temp = layout.partial_path(EMPTY_SHA256)
    temp.unlink(missing_ok=True)
    fsutil.write_file_durably(temp, b"", 0o600)
    store.adopt(temp, EMPTY_SHA256)


def _remove_staging(path: Path) -> None:
    fsutil.remove_tree(path)


def _stage(store: LocalBlobStore, manifest: Manifest, raw: bytes, signature: bytes | None,
           staging: Path, final: Path) -> None:
    """Build the tree in `staging` (links into the store), fsync it all, rename it to `final`."""
    if not staging.parent.is_dir():
        staging.parent.mkdir(parents=True)
        fsutil.fsync_dir(staging.parent.parent)
    staging.mkdir()
    dirs = {staging}
    for f in manifest.files:
        dst = staging / f.path
        if dst.parent not in dirs:
            dst.parent.mkdir(parents=True, exist_ok=True)
            p = dst.parent
            while p not in dirs:
                dirs.add(p)
                p = p.parent
        mode = fsutil.EXEC_MODE if f.executable else fsutil.FILE_MODE
        fsutil.link_or_copy(store.path(f.sha256), dst, mode=mode)
    fsutil.write_file_durably(staging / MANIFEST_NAME, raw)
    if signature is not None:
        fsutil.write_file_durably(staging / SIGNATURE_NAME, signature)
    # Deepest first, so every entry is durable before the directory that names it.
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        fsutil.fsync_dir(d)
    os.rename(staging, final)
    fsutil.fsync_dir(final.parent)
