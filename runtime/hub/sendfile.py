"""Which blob GETs the hub answers ahead of hypercorn (runtime/http/zerocopy.py): `blob_router`.

Only the plain cases of a public hub's `/blobs/<digest>`, answered 200 or 206: a large blob
with `os.sendfile` after a once-per-process check against its digest; a small one (at most
SMALL_BLOB) read whole and checked on every request, as on the app's path, then sent as it
is, so a node fetching many small blobs never pays for hypercorn and the ASGI layers (a
keep-alive connection stays on this path). A corrupt blob is quarantined and answered 500,
as the app would. Everything else (304/412/416, a missing blob, a private hub's
authentication) is declined and served by the app as before: the same answers, cheaper.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

from hub_store import BlobCorrupt, BlobNotFound, InvalidIdentifier, ids
from runtime.api import error_body
from runtime.http import content_range, select
from runtime.http.zerocopy import FileAnswer, FileRouter, HeadRequest
from runtime.hub.downloads import IMMUTABLE, SMALL_BLOB
from runtime.hub.fastpath import PREFIX
from runtime.hub.state import HubState

log = logging.getLogger("flowctl.hub")

# Up to this size a blob is opened, read and hashed on the event loop itself (tens of
# microseconds from the page cache; a thread hop costs more than the work). Larger small
# blobs take one hop to a worker thread.
INLINE_BLOB = 64 * 1024


def blob_router(state: HubState) -> FileRouter:
    """The zero-copy router for `state`'s hub (pass to `serve_app(file_router=...)`)."""

    async def route(request: HeadRequest) -> FileAnswer | None:
        if state.settings.private or not request.path.startswith(PREFIX):
            return None
        try:
            digest = ids.digest(request.path[len(PREFIX):])
        except InvalidIdentifier:
            return None
        try:
            small = _small_checked(state, digest, request.headers, INLINE_BLOB)
            if small is _SMALL:
                small = await state.run(_small_checked, state, digest, request.headers, SMALL_BLOB)
            if small is not _LARGE:
                return small if small.status else None
            await state.verifier.ensure(digest)
        except BlobNotFound:
            return None
        except BlobCorrupt as exc:
            log.error("hub: %s", exc)
            body = json.dumps(error_body(str(exc))).encode()
            return FileAnswer(500, [("content-type", "application/json")], -1, 0, len(body), body)
        return await state.run(_open_checked, state, digest, request.headers)

    return route


# What `_small_checked` says besides an answer: declined (the app answers 304/412/416), a
# blob over its limit but small (try again on a thread), a large blob (the sendfile path).
_DECLINE = FileAnswer(0, [], -1, 0, 0)
_SMALL = FileAnswer(0, [], -1, 0, 0)
_LARGE = FileAnswer(0, [], -1, 0, 0)


def _small_checked(state: HubState, digest: str, headers: dict[str, str], limit: int) -> FileAnswer:
    """The answer for a blob of at most `limit` bytes (checked against its digest), or one of
    _DECLINE, _SMALL (over `limit`) and _LARGE (over SMALL_BLOB).

    Error handling: BlobNotFound if absent; BlobCorrupt (after quarantining it) if the bytes
    do not hash to the digest.
    """
    store = state.data.store
    try:
        fd = os.open(store.path(digest), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BlobNotFound(digest) from None
    try:
        size = os.fstat(fd).st_size
        if size > SMALL_BLOB:
            return _LARGE
        if size > limit:
            return _SMALL
        data = os.read(fd, size + 1)
    finally:
        os.close(fd)
    if state.settings.verify_on_serve:
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            store.quarantine(digest)
            raise BlobCorrupt(digest, actual)
    selection = select(headers, size=len(data), etag=digest)
    if selection.status not in (200, 206):
        return _DECLINE
    out = [("etag", f'"{digest}"'), ("cache-control", IMMUTABLE), ("accept-ranges", "bytes"),
           ("content-type", "application/octet-stream")]
    if selection.status == 206:
        out.append(("content-range", content_range(selection.start, selection.stop, len(data))))
    body = data[selection.start:selection.stop]
    return FileAnswer(selection.status, out, -1, 0, len(body), body)


def _open_checked(state: HubState, digest: str, headers: dict[str, str]) -> FileAnswer | None:
    try:
        fd = os.open(state.data.store.path(digest), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_size <= SMALL_BLOB or not state.verifier.verified(digest, st):
            os.close(fd)
            return None
        selection = select(headers, size=st.st_size, etag=digest)
        if selection.status not in (200, 206):
            os.close(fd)
            return None
        out = [("etag", f'"{digest}"'), ("cache-control", IMMUTABLE), ("accept-ranges", "bytes"),
               ("content-type", "application/octet-stream")]
        if selection.status == 206:
            out.append(("content-range", content_range(selection.start, selection.stop, st.st_size)))
        return FileAnswer(selection.status, out, fd, selection.start, selection.length)
    except BaseException:
        os.close(fd)
        raise
