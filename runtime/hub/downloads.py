"""Download routes: blobs by digest, bundles, the seed's .zip, manifests, model files.

Every body is a blob of the store, served with HEAD, Range, ETag = the SHA-256,
If-None-Match and If-Range: small blobs read whole and digest-checked on each request
(`serve_bytes`), large ones streamed by `serve_file` after a once-per-process check. When the
blobs are in an S3-compatible store, a GET is a 307 to a presigned URL instead (remote.py);
only manifests, which are small metadata, are still read and served by the hub. No part
of a URL is ever joined into a filesystem path: ids are parsed strictly, then looked
up in the catalog, and only a digest (64 hex) names a file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable

from quart import Response, request

from hub_store import BlobCorrupt, BlobNotFound, FileRecord, VersionRecord, ids
from runtime.api import ApiError
from runtime.http import FileChanged, serve_bytes, serve_file
from runtime.hub.modelfiles import CHECKSUM_NAME, checksum_body
from runtime.hub.remote import redirect_blob, remote_store
from runtime.hub.seedzip import ensure_zip
from runtime.hub.state import HubState

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
BUNDLE_TYPE = "application/vnd.flowctl.bundle"
SMALL_BLOB = 256 * 1024


def _counts_as_download() -> bool:
    if request.method == "HEAD":
        return False
    rng = request.headers.get("Range")
    return rng is None or rng.replace(" ", "").startswith("bytes=0-")


async def send_blob(state: HubState, digest: str, *, content_type: str = "application/octet-stream",
                    filename: str | None = None, expected_size: int | None = None,
                    cache_control: str = IMMUTABLE,
                    on_complete: Callable[[], Awaitable[object]] | None = None,
                    relay: bool = False) -> Response:
    """Serve blob `digest` (bare hex) with Range/ETag; its bytes are checked against the digest.

    A small blob is read whole and hashed on every request (one thread hop); a large one
    is hashed once per process (see BlobVerifier), then streamed by `serve_file`. From a
    remote store the answer is a redirect, unless `relay` (small metadata: the hub reads it).
    """
    remote = remote_store(state)
    if remote is not None and not relay:
        return await redirect_blob(state, remote, digest, content_type=content_type, filename=filename,
                                   expected_size=expected_size, cache_control=cache_control,
                                   on_complete=on_complete)
    small: bytes | None
    if remote is not None:
        small = await state.run(remote.read_bytes, digest, verify=state.settings.verify_on_serve)
    else:
        small = await state.run(read_small_checked, state, digest)
    if small is not None:
        if expected_size is not None and len(small) != expected_size:
            raise BlobNotFound(digest)
        response = await serve_bytes(small, etag=digest, content_type=content_type, filename=filename,
                                     cache_control=cache_control)
        if on_complete is not None and response.status_code in (200, 206):
            await on_complete()
        return response
    await state.verifier.ensure(digest)
    try:
        return await serve_file(state.data.store.path(digest), etag=digest, content_type=content_type,
                                filename=filename, expected_size=expected_size,
                                cache_control=cache_control, on_complete=on_complete,
                                chunk_size=state.settings.download_chunk_bytes)
    except (FileNotFoundError, FileChanged):
        state.verifier.forget(digest)
        raise BlobNotFound(digest) from None


def read_small_checked(state: HubState, digest: str) -> bytes | None:
    """The bytes of a blob of at most SMALL_BLOB bytes, verified; None for a larger blob.

    Error handling: BlobNotFound if absent; BlobCorrupt (after quarantining it) if the
    bytes do not hash to the digest.
    """
    store = state.data.store
    try:
        with open(store.path(digest), "rb") as f:
            if os.fstat(f.fileno()).st_size > SMALL_BLOB:
                return None
            data = f.read(SMALL_BLOB + 1)
    except FileNotFoundError:
        raise BlobNotFound(digest) from None
    if state.settings.verify_on_serve:
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            store.quarantine(digest)
            raise BlobCorrupt(digest, actual)
    return data


async def resolve(state: HubState, service_id: str, version: str) -> VersionRecord:
    """Parse a service id and version (or `latest`) from a URL and look it up."""
    sid, ref = ids.service_id(service_id), ids.version_ref(version)
    return await state.run(state.data.catalog.resolve, sid, ref)


def _versioned(response: Response, record: VersionRecord, ref: str) -> Response:
    response.headers["X-Flowctl-Version"] = record.version
    if ref == ids.LATEST:
        response.headers["Cache-Control"] = REVALIDATE
    return response


def _counter(state: HubState, record: VersionRecord) -> Callable[[], Awaitable[object]] | None:
    if not _counts_as_download():
        return None

    async def count() -> None:
        models = await state.run(state.data.catalog.models_of, record.service_id, record.version)
        if models:
            await state.run(state.data.catalog.count_downloads, {m.model_id for m in models})

    return count


def register(app, state: HubState) -> None:
    """Attach the download routes to `app`."""

    @app.route("/blobs/<ref>", methods=["GET", "HEAD"])
    async def blob(ref: str) -> Response:
        return await send_blob(state, ids.digest(ref))

    @app.route("/storage/services/<service_id>/<name>", methods=["GET", "HEAD"])
    async def bundle_file(service_id: str, name: str) -> Response:
        stem, dot, ext = name.rpartition(".")
        if not dot or ext not in ("fbundle", "zip"):
            raise ApiError(404, f"no such download {name!r} (use VERSION.fbundle or VERSION.zip)")
        record = await resolve(state, service_id, stem)
        cache = REVALIDATE if stem == ids.LATEST else IMMUTABLE
        filename = f"{record.service_id}-{record.version}.{ext}"
        if ext == "fbundle":
            response = await send_blob(state, record.sha256, content_type=BUNDLE_TYPE, filename=filename,
                                       expected_size=record.size_bytes, cache_control=cache,
                                       on_complete=_counter(state, record))
        else:
            record = await ensure_zip(state, record)  # sets zip_sha256 and zip_size
            response = await send_blob(state, str(record.zip_sha256), content_type="application/zip",
                                       filename=filename, expected_size=record.zip_size, cache_control=cache,
                                       on_complete=_counter(state, record))
        return _versioned(response, record, stem)

    @app.route("/api/services/<service_id>/<version>/manifest", methods=["GET", "HEAD"])
    async def manifest(service_id: str, version: str) -> Response:
        record = await resolve(state, service_id, version)
        response = await send_blob(state, record.manifest_sha256, content_type="application/json",
                                   cache_control=REVALIDATE if version == ids.LATEST else IMMUTABLE,
                                   relay=True)
        if response.status_code == 200 and request.method == "GET":
            count = _counter(state, record)
            if count is not None:
                await count()
        return _versioned(response, record, version)

    @app.route("/api/services/<service_id>/<version>/signature", methods=["GET", "HEAD"])
    async def signature(service_id: str, version: str) -> Response:
        record = await resolve(state, service_id, version)
        sig = await state.run(state.data.catalog.signature, record.service_id, record.version)
        if sig is None:
            raise ApiError(404, f"{record.service_id}@{record.version} is not signed")
        response = await serve_bytes(bytes(sig), content_type="application/octet-stream",
                                     cache_control=REVALIDATE)
        return _versioned(response, record, version)

    @app.route("/storage/models/<model_id>/<version>/<path:file_path>", methods=["GET", "HEAD"])
    async def model_file(model_id: str, version: str, file_path: str) -> Response:
        mid = ids.model_id(model_id)
        ref = ids.model_version_ref(version)
        rel = ids.file_path(file_path)
        model, record = await state.run(state.data.catalog.resolve_model, mid, ref)
        entry: FileRecord | None = None
        for candidate in model_members(model.path, rel):
            entry = entry or await state.run(state.data.catalog.file, record.service_id,
                                             record.version, candidate)
        if entry is None and rel == CHECKSUM_NAME:
            # The seed's model API: sha256sum lines for the model's files (a real file of that
            # name, found above, is served as it is).
            body = await state.run(checksum_body, state.data.catalog, model)
            response = await serve_bytes(body, etag=hashlib.sha256(body).hexdigest(),
                                         content_type="text/plain; charset=utf-8",
                                         cache_control=REVALIDATE if ref == ids.LATEST else IMMUTABLE)
            response.headers["X-Flowctl-Version"] = model.model_version
            return response
        if entry is None:
            raise ApiError(404, f"model {mid}@{model.model_version} has no file {rel!r}")
        count = None
        if _counts_as_download():
            async def count() -> None:
                await state.run(state.data.catalog.count_downloads, [mid])
        response = await send_blob(state, entry.sha256, filename=rel.rsplit("/", 1)[-1],
                                   expected_size=entry.size,
                                   cache_control=REVALIDATE if ref == ids.LATEST else IMMUTABLE,
                                   on_complete=count)
        response.headers["X-Flowctl-Version"] = model.model_version
        return response


def model_members(model_path: str, rel: str) -> list[str]:
    """Bundle paths file `rel` of a model rooted at `model_path` may have (a dir, a file or '')."""
    if not model_path:
        return [rel]
    found = [f"{model_path}/{rel}"]
    if rel == model_path.rsplit("/", 1)[-1]:
        found.append(model_path)  # the model is a single file
    return found
