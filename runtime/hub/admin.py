"""Writing routes, behind the admin key: publish (streamed PUT), stable/yank flags, GC, fsck."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import BinaryIO

import trio
from quart import Response, request

from hub_store import (
    BlobDigestMismatch,
    InsufficientStorage,
    SpaceGuard,
    collect_garbage,
    fsck,
    ids,
    ingest_bundle,
    is_disk_full,
)
from packer import NotABundle
from packer.zipimport import is_zip as packer_is_zip
from runtime.api import ApiError, bearer_ok, json_response
from runtime.api.guard import principal_of
from runtime.hub.api import version_json
from runtime.hub.remote import remote_store
from runtime.hub.s3blobs import S3BlobStore
from runtime.hub.seedzip import ensure_zip, with_zip
from runtime.hub.state import HubState
from runtime.hub.zipupload import convert_zip

SPOOL_CHUNK = 1 << 20
FLAG_ACTIONS = {"stable": {"stable": True}, "unstable": {"stable": False},
                "yank": {"yanked": True}, "unyank": {"yanked": False}}


def require_admin(state: HubState) -> None:
    """401 unless the request carries the admin key (or a principal the plane's guard let through)."""
    if principal_of(request) is None and not bearer_ok(request.headers.get("Authorization"), state.admin_key_hash):
        raise ApiError(401, "this needs the hub's admin key (Authorization: Bearer KEY; "
                            "flowctl: --token or FLOWCTL_TOKEN)", {"WWW-Authenticate": "Bearer"})


def _flag(name: str) -> bool | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise ApiError(400, f"query parameter {name} must be true or false, not {raw!r}")


class _Spool:
    """The upload's temp file in the store's tmp/, hashed as it is written (in worker threads)."""

    def __init__(self, path: Path):
        self.path = path
        self.file: BinaryIO = open(path, "xb")
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, parts: list[bytes]) -> None:
        data = b"".join(parts)
        self.file.write(data)
        self.hash.update(data)
        self.size += len(data)

    def finish(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()

    def discard(self) -> None:
        """Remove the temp file, even when closing it fails (a full disk cannot flush)."""
        try:
            if not self.file.closed:
                self.file.close()
        except OSError:
            pass  # the buffered rest is not wanted anyway
        finally:
            self.path.unlink(missing_ok=True)


async def _receive_body(state: HubState, spool: _Spool) -> None:
    """Stream the request body into `spool` in ~1 MiB writes; each read has an idle deadline."""
    body = request.body.__aiter__()
    pending: list[bytes] = []
    pending_size = 0
    while True:
        try:
            with trio.fail_after(state.settings.upload_idle_timeout):
                chunk = await body.__anext__()
        except StopAsyncIteration:
            break
        except trio.TooSlowError:
            raise ApiError(408, f"upload stalled for {state.settings.upload_idle_timeout:g} s") from None
        pending.append(chunk)
        pending_size += len(chunk)
        if pending_size >= SPOOL_CHUNK:
            await state.run(spool.write, pending)
            pending, pending_size = [], 0
    if pending:
        await state.run(spool.write, pending)
    await state.run(spool.finish)


def register(app, state: HubState) -> None:
    """Attach the admin routes to `app`."""
    data = state.data

    @app.route("/api/services/<service_id>/<version>", methods=["PUT"])
    async def publish(service_id: str, version: str) -> Response:
        require_admin(state)
        sid, ver = ids.service_id(service_id), ids.version(version)
        expected = request.headers.get("X-Flowctl-Sha256")
        if expected is not None:
            expected = ids.hex_digest(expected.strip().removeprefix("sha256:"))
        stable = _flag("stable")
        limit = state.settings.max_publish_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, f"bundle of {request.content_length} bytes exceeds this hub's "
                                f"limit of {limit} bytes")
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type.startswith("multipart/"):
            raise ApiError(415, "send the .fbundle or the seed's .zip as the raw request body "
                                "(e.g. curl -T FILE), not as multipart form data")
        existing = await state.run(data.catalog.find_version, sid, ver)
        if existing is not None and expected is not None and (
                expected in (existing.sha256, existing.zip_sha256) or content_type != "application/zip"):
            # Decided by the announced digest alone; the body need not be read. (Another zip
            # may still convert to the same bundle, so an unknown zip is read.)
            if expected not in (existing.sha256, existing.zip_sha256):
                raise ApiError(409, f"{sid}@{ver} is already published with other bytes "
                                    f"(bundle sha256 {existing.sha256}); versions are immutable")
            existing = await with_zip(state, existing)
            return json_response({"service_id": sid, "created": False, **version_json(existing)})
        space = SpaceGuard(data.store.root, state.settings.disk_reserve_bytes, state.settings.free_space)
        if request.content_length is not None:
            # Refused before a byte of the body is read (the files it unpacks are checked later).
            await state.run(space.require, request.content_length,
                            f"a bundle of {request.content_length} bytes")
        spool = await state.run(_Spool, data.store.temp_file())
        try:
            try:
                await _receive_body(state, spool)
            except OSError as exc:
                if is_disk_full(exc):
                    raise InsufficientStorage(f"the upload of {sid}@{ver}") from exc
                raise
            if request.content_length is not None and spool.size != request.content_length:
                raise ApiError(400, f"upload ended after {spool.size} of {request.content_length} bytes")
            bundle, digest, size = spool.path, spool.hash.hexdigest(), spool.size
            is_zip = await state.run(packer_is_zip, spool.path)
            if is_zip:
                if expected is not None and expected != digest:
                    raise BlobDigestMismatch("uploaded zip", expected, digest)
                expected = None  # it named the zip; the bundle made from it is new
                bundle, digest, size = await state.run(convert_zip, data.store, spool.path, space,
                                                       f"the zip of {sid}@{ver}")
            try:
                result = await state.run(
                    ingest_bundle, data.blobs, data.catalog, bundle, sha256=digest,
                    size=size, expected_sha256=expected, trusted_keys=state.settings.trusted_keys,
                    require_signature=state.settings.require_signature, stable=stable, expect_id=(sid, ver),
                    space=space if data.remote is None else None)  # a remote store's room is not ours to check
            except NotABundle:
                raise ApiError(400, "bad upload: the body is " + ("empty" if size == 0 else
                                    "neither a flowctl bundle (.fbundle) nor a seed service zip")) from None
            finally:
                if is_zip:
                    bundle.unlink(missing_ok=True)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(spool.discard)
        # Built now, so the seed's checksum is ready the moment the version is visible.
        record = await ensure_zip(state, result.record)
        body = {"service_id": sid, "created": result.created, "new_blobs": result.new_blobs,
                "new_bytes": result.new_bytes, **version_json(record)}
        return json_response(body, status=201 if result.created else 200)

    @app.route("/api/services/<service_id>/<version>/<action>", methods=["GET", "POST"])
    async def flags(service_id: str, version: str, action: str) -> Response:
        sid, ver = ids.service_id(service_id), ids.version_ref(version)
        if action not in FLAG_ACTIONS:
            raise ApiError(404, f"no action {action!r} (one of {', '.join(FLAG_ACTIONS)})")
        if request.method != "POST":
            raise ApiError(405, f"{action} needs POST")
        require_admin(state)
        ver = ids.version(ver)
        record = await state.run(data.catalog.set_flags, sid, ver, **FLAG_ACTIONS[action])
        return json_response({"service_id": sid, **version_json(await with_zip(state, record))})

    @app.post("/api/admin/gc")
    async def gc() -> Response:
        require_admin(state)
        dry_run = bool(_flag("dry_run"))
        report = await state.run(collect_garbage, data.blobs, data.catalog, dry_run=dry_run)
        body: dict[str, object] = dict(report.to_dict())
        remote = remote_store(state)
        if remote is not None:
            body["uploads_aborted"] = await state.run(abort_stale_uploads, remote, dry_run=dry_run)
        return json_response(body)

    @app.post("/api/admin/fsck")
    async def check() -> Response:
        require_admin(state)
        report = await state.run(fsck, data.blobs, data.catalog, quarantine=bool(_flag("quarantine")))
        for digest in report.corrupt:
            state.verifier.forget(digest)
        return json_response(report.to_dict())


STALE_UPLOAD_S = 24 * 3600.0


def abort_stale_uploads(store: S3BlobStore, *, max_age_s: float = STALE_UPLOAD_S, dry_run: bool = False) -> int:
    """Abort multipart uploads a crashed writer left (begun over `max_age_s` ago); how many (GC)."""
    stale = store.stale_uploads(time.time() - max_age_s)
    if not dry_run:
        for key, upload_id in stale:
            store.abort_upload(key, upload_id)
    return len(stale)
