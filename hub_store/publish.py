"""Publishing: a bundle file becomes blobs plus catalog rows, all or nothing.

Order of work, so that a crash or a cut-off upload leaves nothing visible:
1. the uploaded bytes sit in the store's tmp/ (the caller hashed them while writing);
2. the manifest is read and checked (digest, identity, signature), and the files the store
   lacks must fit on the disk above its reserve (`space`), else InsufficientStorage;
3. every digest about to be stored is leased, so a concurrent GC keeps it;
4. every file is streamed out of the bundle into the blob store, each checked
   against the manifest on the way; the bundle itself and service.json become blobs;
5. the catalog rows are inserted, and the lease released, in one transaction.
A failure before 5 leaves only unreferenced blobs, which GC reclaims. A disk that fills up
on the way (ENOSPC, SQLITE_FULL) raises InsufficientStorage, and no half-written file stays.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub_store import ids
from hub_store.blobs import CHUNK, BlobStore
from hub_store.catalog import Catalog, FileRecord, ModelRecord, NewVersion, VersionRecord
from hub_store.errors import (
    BadBundle,
    BlobDigestMismatch,
    Conflict,
    InsufficientStorage,
    StoreError,
)
from hub_store.space import SpaceGuard, is_disk_full
from packer.semver import parse_version


@dataclass(frozen=True)
class PublishResult:
    """What a publish did: the version record and whether it was new."""

    record: VersionRecord
    created: bool
    new_blobs: int = 0
    new_bytes: int = 0


def copy_to_temp(store: BlobStore, source: Path) -> tuple[Path, str, int]:
    """Copy a local bundle into the store's tmp/ while hashing it; (temp, sha256 hex, size)."""
    temp = store.temp_file()
    h = hashlib.sha256()
    size = 0
    try:
        with open(source, "rb") as src, open(temp, "xb") as dst:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                dst.write(chunk)
                size += len(chunk)
            dst.flush()
            os.fsync(dst.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp, h.hexdigest(), size


def publish_file(store: BlobStore, catalog: Catalog, bundle: Path, **options: Any) -> PublishResult:
    """Publish a bundle from a local path (see `ingest_bundle` for the options)."""
    temp, digest, size = copy_to_temp(store, Path(bundle))
    return ingest_bundle(store, catalog, temp, sha256=digest, size=size, **options)


def ingest_bundle(
    store: BlobStore,
    catalog: Catalog,
    temp: Path,
    *,
    sha256: str,
    size: int,
    expected_sha256: str | None = None,
    trusted_keys: tuple[Any, ...] = (),
    require_signature: bool = False,
    stable: bool | None = None,
    limits: Any = None,
    expect_id: tuple[str, str] | None = None,
    space: SpaceGuard | None = None,
) -> PublishResult:
    """Publish the bundle at `temp` (in the store's tmp/, hashed by the caller); consumes `temp`.

    `stable` defaults to True for releases and False for pre-releases. `expect_id` is the
    (service_id, version) the upload was addressed to; a bundle of another raises BadBundle.
    `space` checks that the files the store lacks fit on the disk before they are written.
    Error handling: a bad bundle raises the packer's error; a version that exists
    with other bytes raises Conflict; identical bytes return created=False; too little
    disk (checked, or found by a failed write) raises InsufficientStorage.
    """
    from packer import open_bundle  # the packer's streaming reader

    lease_id = secrets.token_hex(16)
    what = "the uploaded bundle"
    try:
        if expected_sha256 is not None and expected_sha256 != sha256:
            raise BlobDigestMismatch("uploaded bundle", expected_sha256, sha256)
        with open(temp, "rb") as f:
            reader_cm = open_bundle(f) if limits is None else open_bundle(f, limits=limits)
            with reader_cm as reader:
                manifest = reader.manifest
                ids.service_id(manifest.service_id)
                ids.version(manifest.version)
                if expect_id is not None and expect_id != (manifest.service_id, manifest.version):
                    raise BadBundle(f"the bundle is {manifest.service_id}@{manifest.version}, but was "
                                    f"sent to {expect_id[0]}@{expect_id[1]}")
                existing = catalog.find_version(manifest.service_id, manifest.version)
                if existing is not None:
                    return _same_or_conflict(existing, sha256)
                signer = _check_signature(reader, trusted_keys, require_signature)
                manifest_bytes = reader.manifest_bytes
                manifest_digest = hashlib.sha256(manifest_bytes).hexdigest()
                what = f"{manifest.service_id}@{manifest.version}"
                if space is not None:
                    lacking = {e.sha256: e.size for e in manifest.files if not store.exists(e.sha256)}
                    space.require(sum(lacking.values()) + len(manifest_bytes), f"the files of {what}")
                wanted = {sha256, manifest_digest, *(e.sha256 for e in manifest.files)}
                catalog.lease_many(lease_id, wanted)
                new_blobs, new_bytes = _store_files(store, reader, manifest)
        store.put_bytes(manifest_bytes)
        store.adopt(temp, sha256)
        new = _new_version(manifest, sha256, size, manifest_digest, reader.signature, signer, stable)
        try:
            record = catalog.add_version(new, lease_id=lease_id)
        except sqlite3.IntegrityError as exc:
            # A concurrent publish of the same version won the race since find_version above.
            existing = catalog.find_version(manifest.service_id, manifest.version)
            if existing is None:
                raise StoreError(f"catalog insert failed: {exc}") from exc
            return _same_or_conflict(existing, sha256)
        return PublishResult(record, created=True, new_blobs=new_blobs, new_bytes=new_bytes)
    except (OSError, sqlite3.Error) as exc:
        if is_disk_full(exc):
            raise InsufficientStorage(what) from exc
        raise
    finally:
        temp.unlink(missing_ok=True)
        _release(catalog, lease_id)


def _release(catalog: Catalog, lease_id: str) -> None:
    try:
        catalog.release(lease_id)
    except sqlite3.Error as exc:
        # On a full disk even this delete can fail; the lease then simply expires.
        if not is_disk_full(exc):
            raise


def _same_or_conflict(existing: VersionRecord, sha256: str) -> PublishResult:
    if existing.sha256 == sha256:
        return PublishResult(existing, created=False)
    raise Conflict(f"{existing.service_id}@{existing.version} is already published with other bytes "
                   f"(sha256 {existing.sha256}); versions are immutable, publish a new version")


def _check_signature(reader: Any, trusted_keys: tuple[Any, ...], require: bool) -> str | None:
    from packer import SignatureError

    if reader.signature is None:
        if require:
            raise SignatureError("the bundle is unsigned and this hub requires signatures")
        return None
    if not trusted_keys:
        return None
    from packer import signing

    return signing.verify_signature(reader.manifest_bytes, reader.signature, trusted_keys)


def _store_files(store: BlobStore, reader: Any, manifest: Any) -> tuple[int, int]:
    """Stream every file into the blob store; the reader checks each file's size and digest."""
    from packer import BundleError

    expected = {e.path: e for e in manifest.files}
    seen: set[str] = set()
    new_blobs = new_bytes = 0
    for entry, chunks in reader.iter_files():
        if entry.path not in expected or entry.path in seen:
            raise BundleError("is not listed once in service.json", member=entry.path)
        seen.add(entry.path)
        if store.exists(entry.sha256) and store.stat(entry.sha256).size == entry.size:
            for _ in chunks:  # still consumed: the reader verifies the bytes as they pass
                pass
            continue
        store.put_chunks(chunks, expected=entry.sha256, verified=True)  # the reader checks
        new_blobs += 1
        new_bytes += entry.size
    missing = sorted(set(expected) - seen)
    if missing:
        raise BundleError("is listed in service.json but missing from the bundle", member=missing[0])
    return new_blobs, new_bytes


def _new_version(manifest: Any, sha256: str, size: int, manifest_digest: str, signature: bytes | None,
                 signer: str | None, stable: bool | None) -> NewVersion:
    if stable is None:
        stable = not parse_version(manifest.version).is_prerelease
    return NewVersion(
        service_id=manifest.service_id, service_name=manifest.service_name,
        service_type=manifest.service_type, port=manifest.port, description=manifest.description,
        version=manifest.version, sha256=sha256, size_bytes=size, manifest_sha256=manifest_digest,
        created_at=manifest.created_at, stable=stable, signature=signature, signer=signer,
        files=tuple(FileRecord(f.path, f.size, f.mode, f.sha256) for f in manifest.files),
        models=tuple(ModelRecord(m.model_id, m.version, m.model_type, manifest.service_id,
                                 manifest.version, m.path) for m in manifest.models),
    )


def export_zip(store: BlobStore, catalog: Catalog, record: VersionRecord) -> tuple[str, int]:
    """The seed's .zip of a version, built once from the bundle and kept as a blob; (digest, size)."""
    if record.zip_sha256 and store.exists(record.zip_sha256):
        return record.zip_sha256, store.stat(record.zip_sha256).size
    from packer import write_zip

    temp = store.temp_file("zip-")
    lease_id = secrets.token_hex(16)
    try:
        with store.local_file(record.sha256) as bundle:  # a download first when the store is remote
            write_zip(bundle, temp)
        digest = store.seal(temp)
        info = store.adopt(temp, digest, lease=lambda d: catalog.lease_many(lease_id, {d}))
        catalog.set_zip(record.service_id, record.version, info.digest, info.size)
        return info.digest, info.size
    except (OSError, sqlite3.Error) as exc:
        if is_disk_full(exc):
            raise InsufficientStorage(f"the .zip of {record.service_id}@{record.version}") from exc
        raise
    finally:
        temp.unlink(missing_ok=True)
        catalog.release(lease_id)

