"""Downloads of a hub whose blobs are in an S3-compatible store: 307 to a presigned GET.

The bytes never pass through the plane: a GET of a blob, a bundle or a model file is answered
`307 Temporary Redirect` to a GET URL of the object signed for `HubSettings.blob_url_ttl`
seconds (`Cache-Control: no-store`: the URL expires, the answer must not be kept). What needs
no bytes is answered here from the object's metadata, with the usual headers: HEAD, and the
304/412/416 that the conditional and Range headers decide. Clients (the node, `flowctl hub
pull`) follow the redirect without the plane's Authorization header and send Range and their
digest checks to the store as they would to the hub; an expired URL is refused by the store
(403) and the client asks the plane again for a fresh one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from quart import Response, request

from hub_store import BlobNotFound
from runtime.http import select
from runtime.http.files import content_disposition, file_response
from runtime.hub.s3blobs import S3BlobStore
from runtime.hub.state import HubState


def remote_store(state: HubState) -> S3BlobStore | None:
    """The hub's S3 store, or None when its blobs are local files."""
    remote = state.data.remote
    return remote if isinstance(remote, S3BlobStore) else None


async def redirect_blob(state: HubState, store: S3BlobStore, digest: str, *, content_type: str,
                        filename: str | None, expected_size: int | None, cache_control: str,
                        on_complete: Callable[[], Awaitable[object]] | None) -> Response:
    """Answer a GET with a 307 to a presigned URL of blob `digest`; HEAD and 304/412/416 here."""
    info = await state.run(store.stat_recent, digest)
    if expected_size is not None and info.size != expected_size:
        raise BlobNotFound(digest)
    selection = select(request.headers, size=info.size, etag=digest)
    if request.method == "HEAD" or selection.status in (304, 412, 416):
        # The headers serve_file would send for this selection, without a body.
        return file_response(selection, None, size=info.size, etag=digest, content_type=content_type,
                             filename=filename, last_modified=None, cache_control=cache_control)
    url = await state.run(store.presign_get, digest, state.settings.blob_url_ttl, content_type=content_type,
                          disposition=content_disposition(filename) if filename else None)
    if on_complete is not None:
        await on_complete()  # counted when handed out: the plane never sees the transfer end
    response = Response("", status=307)
    response.headers["Location"] = url
    response.headers["Cache-Control"] = "no-store"
    return response
