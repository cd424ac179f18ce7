"""HTTP routes for step artifacts and broadcast shards, on the plane's quart app.

    GET  /api/v1/runs/{run_id}/artifacts                 the run's artifacts (?step= ?attempt=)
    GET  /api/v1/runs/{run_id}/artifacts/{step}/{path}   one artifact's bytes (?attempt=; Range, ETag)
    GET  /api/v1/runs/{run_id}/shards                    a broadcast run's shards (?step=)
    PUT  /api/cluster/jobs/blobs/{sha256}                a node uploads one artifact's bytes
    POST /api/cluster/jobs/artifacts                     a node records an attempt's artifacts

The `/api/v1/runs` routes take the admin key or the run's tenant's key (another tenant's run is
404). A download without `?attempt=` serves the step's latest succeeded attempt's file, else the
latest attempt that has it. The path is looked up in the jobs database, never joined into a
filesystem path; a path with `..`, `.` or empty parts is refused (400). The `/api/cluster/jobs`
routes take a node's credential and accept only an attempt (or shard) this plane has that node
running; bytes are checked against the digest in the URL and the size limit as they arrive.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, request

from hub_store import ids
from hub_store.errors import BlobDigestMismatch, BlobNotFound
from runtime.api import ApiError, bearer_ok, error_response, json_response
from runtime.api.guard import principal_of
from runtime.http import FileChanged, serve_file
from runtime.http.jsonbody import InvalidJson, decode_json
from runtime.jobs.artifacts import ArtifactError, ArtifactStore, ArtifactTooLarge, check_path
from runtime.jobs.errors import UnknownJob
from runtime.jobs.shards import ShardRecords
from runtime.jobs.store import RunStore

if TYPE_CHECKING:
    from runtime.jobs.node_executor import NodeExecutor

PREFIX = "/api/v1"
BLOBS = "/api/cluster/jobs/blobs/"
IDLE_S = 60.0
TenantOf = Callable[[str], Awaitable[str | None]]


def register(app: Any, store: RunStore, artifacts: ArtifactStore, *, admin_key_hash: str,
             tenant_of: TenantOf | None, shards: ShardRecords | None = None,
             nodes: NodeExecutor | None = None) -> None:
    """Attach the artifact routes; the node upload routes only with `nodes` (the scheduler here)."""

    async def db(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await trio.to_thread.run_sync(partial(fn, *args, **kwargs))

    async def visible_run(run_id: str) -> None:
        auth = request.headers.get("Authorization")
        tenant: str | None = None
        if (who := principal_of(request)) is not None:  # a user, its role checked by the plane's guard
            tenant = who.tenant
        elif not bearer_ok(auth, admin_key_hash):
            tenant = await tenant_of(auth) if auth and tenant_of is not None else None
            if tenant is None:
                raise ApiError(401, "this needs the admin key or a tenant's API key (Authorization: Bearer ...)",
                               {"WWW-Authenticate": "Bearer"})
        try:
            run = await db(store.run, run_id)
        except UnknownJob:
            raise ApiError(404, f"no run {run_id!r}") from None
        if tenant is not None and run.tenant != tenant:
            raise ApiError(404, f"no run {run_id!r}")

    def answer(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
        async def wrapped(*args: Any, **kwargs: Any) -> Response:
            try:
                return await handler(*args, **kwargs)
            except ApiError as exc:
                return error_response(exc.status, exc.detail, exc.headers)
            except ArtifactTooLarge as exc:
                return error_response(413, str(exc))
            except ArtifactError as exc:
                return error_response(400, str(exc))
        wrapped.__name__ = handler.__name__
        return wrapped

    @app.get(f"{PREFIX}/runs/<run_id>/artifacts")
    @answer
    async def list_artifacts(run_id: str) -> Response:
        await visible_run(run_id)
        found = await db(artifacts.list, run_id, request.args.get("step"), _attempt_arg())
        return json_response({"run_id": run_id, "artifacts": [a.to_json() for a in found]})

    @app.get(f"{PREFIX}/runs/<run_id>/artifacts/<step>/<path:path>")
    @answer
    async def get_artifact(run_id: str, step: str, path: str) -> Response:
        await visible_run(run_id)
        check_path(path)
        attempt = _attempt_arg()
        found = None if attempt is not None else await db(artifacts.find, run_id, step, path)
        found = found or await db(artifacts.latest, run_id, step, path, attempt)
        if found is None:
            raise ApiError(404, f"run {run_id} has no artifact {path!r} of step {step!r}")
        local = artifacts.blob_path(found)
        if local is None:  # the hub's S3 store: the bytes go from there (runtime/hub/remote.py)
            return await _redirect(artifacts, found.digest, path.rsplit("/", 1)[-1], db)
        try:
            return await serve_file(local, etag=found.digest, expected_size=found.size,
                                    filename=path.rsplit("/", 1)[-1], cache_control="private, max-age=3600")
        except (FileNotFoundError, FileChanged):
            raise ApiError(410, f"artifact {path!r}'s bytes are gone from the blob store") from None

    if shards is not None:
        @app.get(f"{PREFIX}/runs/<run_id>/shards")
        @answer
        async def list_shards(run_id: str) -> Response:
            await visible_run(run_id)
            rows = await db(shards.of, run_id, request.args.get("step"))
            return json_response({"run_id": run_id, "shards": [{"step": r.step, **r.to_json()} for r in rows]})

    if nodes is None:
        return
    executor = nodes
    _raise_upload_cap(app, artifacts.limits.max_file_bytes)

    async def uploading_node(run_id: str, step: str, attempt: int, shard: int | None) -> str:
        from runtime.scheduler.node_connection import authenticate
        from runtime.scheduler.store import NodeCredential, TokenError

        try:
            auth = await authenticate(executor.scheduler, request.headers.get("Authorization"))
        except TokenError as exc:
            raise ApiError(401, f"not a node's credential: {exc}", {"WWW-Authenticate": "Bearer"}) from None
        if not isinstance(auth, NodeCredential):
            raise ApiError(401, "artifact uploads need a node's credential, not a join token")
        if not executor.expects(auth.node_id, run_id, step, attempt, shard):
            what = f"attempt {attempt} of step {step!r} of run {run_id}" + (f" shard {shard}" if shard is not None else "")
            raise ApiError(409, f"this node does not run {what} for this plane (now)")
        return auth.node_id

    @app.route(f"{BLOBS}<digest>", methods=["PUT"])
    @answer
    async def put_blob(digest: str) -> Response:
        try:
            digest = ids.hex_digest(digest)
        except ValueError:
            raise ApiError(400, "the URL must end in the file's SHA-256 (64 hex digits)") from None
        run_id, step = request.args.get("run_id", ""), request.args.get("step", "")
        await uploading_node(run_id, step, _int(request.args.get("attempt"), "attempt") or 0,
                             _int(request.args.get("shard"), "shard"))
        limit = artifacts.limits.max_file_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ArtifactTooLarge(f"{request.content_length} bytes are over the limit of {limit} bytes per artifact")
        writer = await db(artifacts.blobs.writer, digest)
        try:
            body = request.body.__aiter__()
            while True:
                try:
                    with trio.fail_after(IDLE_S):
                        chunk = await body.__anext__()
                except StopAsyncIteration:
                    break
                except trio.TooSlowError:
                    raise ApiError(408, f"upload stalled for {IDLE_S:g} s") from None
                if writer.size + len(chunk) > limit:
                    raise ArtifactTooLarge(f"the upload is over the limit of {limit} bytes per artifact")
                await db(writer.write, chunk)
            info = await db(writer.commit, lease=artifacts.hold_upload)
        except BlobDigestMismatch as exc:
            raise ApiError(422, f"the bytes do not match the URL's SHA-256 ({exc})") from None
        finally:
            await db(writer.abort)
        return json_response({"sha256": info.digest, "size": info.size}, 201)

    @app.post("/api/cluster/jobs/artifacts")
    @answer
    async def record_artifacts() -> Response:
        try:
            doc = decode_json(await request.get_data(cache=False, as_text=False, parse_form_data=False))
        except InvalidJson as exc:
            raise ApiError(400, str(exc)) from None
        if not isinstance(doc, dict) or not isinstance(doc.get("files"), list):
            raise ApiError(400, "the body must be {run_id, step, attempt, shard, files: [{path, sha256, size}]}")
        run_id, step = str(doc.get("run_id", "")), str(doc.get("step", ""))
        attempt, shard = doc.get("attempt"), doc.get("shard")
        if not isinstance(attempt, int) or not (shard is None or isinstance(shard, int)):
            raise ApiError(400, "attempt must be a number, shard a number or null")
        node = await uploading_node(run_id, step, attempt, shard)
        files = []
        for i, f in enumerate(doc["files"]):
            if not (isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("sha256"), str)
                    and isinstance(f.get("size"), int) and f["size"] >= 0):
                raise ApiError(400, f"files[{i}]: needs path (text), sha256 (hex) and size (bytes)")
            try:
                files.append((f["path"], ids.hex_digest(f["sha256"]), f["size"]))
            except ValueError:
                raise ApiError(400, f"files[{i}].sha256 is not a SHA-256") from None
        try:
            made = await db(artifacts.record, run_id, step, attempt, files, shard=shard, node=node)
        except BlobNotFound as exc:
            raise ApiError(400, str(exc)) from None
        return json_response({"recorded": len(made)}, 201)


def _attempt_arg() -> int | None:
    return _int(request.args.get("attempt"), "attempt")


def _int(raw: str | None, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise ApiError(400, f"{name} must be a whole number, not {raw[:40]!r}")
    return int(raw)


def _raise_upload_cap(app: Any, limit: int) -> None:
    """quart fixes a request's body cap when it builds the request: artifact uploads may be as
    large as one artifact may be; every other route keeps the app's cap."""
    base = app.request_class

    class ArtifactRequest(base):  # type: ignore[misc, valid-type]  # mypy cannot follow a variable base
        def __init__(self, method: str, scheme: str, path: str, *args: Any, **kwargs: Any) -> None:
            if method == "PUT" and path.startswith(BLOBS):
                kwargs["max_content_length"] = limit
            super().__init__(method, scheme, path, *args, **kwargs)

    app.request_class = ArtifactRequest


async def _redirect(artifacts: ArtifactStore, digest: str, filename: str,
                    db: Callable[..., Awaitable[Any]]) -> Response:
    """307 to a presigned GET of the artifact's blob in the hub's S3 store."""
    from runtime.http.files import content_disposition
    from runtime.hub.s3blobs import S3BlobStore
    from runtime.hub.state import DEFAULT_BLOB_URL_TTL

    store = artifacts.blobs
    if not isinstance(store, S3BlobStore):
        raise ApiError(410, "the artifact's bytes are in a store this plane cannot serve")
    url = await db(store.presign_get, digest, DEFAULT_BLOB_URL_TTL, disposition=content_disposition(filename))
    response = Response("", status=307)
    response.headers["Location"] = url
    response.headers["Cache-Control"] = "no-store"
    return response
