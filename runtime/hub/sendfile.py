"""Which blob GETs the hub answers with `os.sendfile` (runtime/http/zerocopy.py): `blob_router`.

Only the plain cases: a public hub, `/blobs/<digest>` of a large blob (small ones have the
ASGI fast path), checked against its digest once per process as on the app's path (a
corrupt one is quarantined and answered 500, as the app would), answered 200 or 206.
Everything else (304/412/416, a missing blob, a private hub's authentication) is declined
and served by the app as before, so the answers are the same, only cheaper.
"""

from __future__ import annotations

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
            await state.verifier.ensure(digest)
        except BlobNotFound:
            return None
        except BlobCorrupt as exc:
            log.error("hub: %s", exc)
            body = json.dumps(error_body(str(exc))).encode()
            return FileAnswer(500, [("content-type", "application/json")], -1, 0, len(body), body)
        return await state.run(_open_checked, state, digest, request.headers)

    return route


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

