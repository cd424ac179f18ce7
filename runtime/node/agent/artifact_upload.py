"""A node's upload of a finished step attempt's artifacts to its control plane, over HTTP.

Each file goes as `PUT /api/cluster/jobs/blobs/{sha256}` (the plane checks the digest and the
size limit as the bytes arrive and keeps nothing on a mismatch), then one
`POST /api/cluster/jobs/artifacts` records them all at once. Both carry the node's credential
(`Authorization: Bearer ...`, as its control connection does), and the plane accepts them only
for an attempt (or shard) it has this node running now. While the plane is away or restarting
(no answer, 409 until it has re-attached the attempt, 5xx) each call is tried again with backoff
for up to `WAIT_S`; a refusal (the limits: 413, a bad name: 400) fails the attempt at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import trio

from runtime.control.messages import JobAttempt
from runtime.jobs.artifacts import ArtifactError
from runtime.jobs.output_files import OutputFile

CHUNK = 1 << 20
TIMEOUT_S = 60.0
WAIT_S = 180.0  # a plane restarting re-attaches its attempts within its reattach window (60 s)
BACKOFF_S, BACKOFF_MAX_S = 0.5, 5.0
RETRIED = frozenset({409, 429, 500, 502, 503, 504})


class ArtifactUploader:
    """Uploads artifacts to the plane at `url` with the bearer `bearer()` returns."""

    def __init__(self, url: str, bearer: Callable[[], str], *, wait_s: float = WAIT_S):
        self.url, self.bearer, self.wait_s = url.rstrip("/"), bearer, wait_s

    async def __call__(self, m: JobAttempt, files: list[OutputFile]) -> None:
        """Upload `files` as the attempt's artifacts; ArtifactError says why the plane refused."""
        secret = await trio.to_thread.run_sync(self.bearer)
        headers = {"Authorization": f"Bearer {secret}"}
        where = {"run_id": m.run_id, "step": m.step, "attempt": str(m.attempt)}
        if m.shard is not None:
            where["shard"] = str(m.shard)
        async with httpx.AsyncClient(base_url=self.url, timeout=TIMEOUT_S, headers=headers) as client:
            for f in files:
                def put(f: OutputFile = f) -> Awaitable[httpx.Response]:  # a fresh body for each try
                    return client.put(f"/api/cluster/jobs/blobs/{quote(f.digest)}", params=where,
                                      content=_chunks(f.source), headers={"Content-Length": str(f.size)})

                await self._retrying(put, f.path)
            body = {**where, "attempt": m.attempt, "shard": m.shard,
                    "files": [{"path": f.path, "sha256": f.digest, "size": f.size} for f in files]}
            await self._retrying(lambda: client.post("/api/cluster/jobs/artifacts", json=body), "the artifact list")

    async def _retrying(self, call: Callable[[], Awaitable[httpx.Response]], what: str) -> None:
        """`call` until it succeeds; while the plane is away or restarting (no answer, 409 before it
        re-attached the attempt, 5xx) again after a backoff, for at most `self.wait_s`."""
        deadline = trio.current_time() + self.wait_s
        delay = BACKOFF_S
        while True:
            try:
                r = await call()
                if r.status_code < 300:
                    return
                if r.status_code not in RETRIED or trio.current_time() + delay > deadline:
                    _check(r, what)
            except httpx.HTTPError as e:
                if trio.current_time() + delay > deadline:
                    raise ArtifactError(f"cannot upload {what!r} to the plane: {e!r}"[:300]) from None
            await trio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)


def _check(r: httpx.Response, what: str) -> None:
    if r.status_code >= 300:
        try:
            detail = r.json().get("detail") or r.text
        except ValueError:
            detail = r.text
        raise ArtifactError(f"the plane refused {what!r} (HTTP {r.status_code}): {str(detail)[:300]}")


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    f = await trio.to_thread.run_sync(open, path, "rb")
    try:
        while chunk := await trio.to_thread.run_sync(f.read, CHUNK):
            yield chunk
    finally:
        f.close()
