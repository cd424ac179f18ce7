"""Where a hub keeps its blobs (`--blobs URL`, config `blobs`): a local directory or an S3 bucket.

`file:///DIR` (or nothing: the data dir, as always) keeps blobs as files; `s3://bucket/prefix`
keeps them in any S3-compatible store (runtime/hub/s3blobs.py), reached at
FLOWCTL_S3_ENDPOINT_URL with the standard AWS_* credentials. The bucket is checked when the
hub opens, so a missing bucket or refused credentials stop the start with one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from hub_store import HubData, StoreError, open_data_dir
from hub_store.sql import State


def check_blobs_url(url: str | None) -> Path | str | None:
    """The directory of a `file://` URL, the `s3://` URL itself, or None; StoreError naming the problem."""
    if url is None or not url.strip():
        return None
    url = url.strip()
    if url.startswith("s3://"):
        from runtime.hub.s3client import parse_s3_url

        try:
            parse_s3_url(url)
        except ValueError as exc:
            raise StoreError(f"blobs: {exc}") from None
        return url
    parts = urlsplit(url)
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path.startswith("/"):
        return Path(unquote(parts.path))
    raise StoreError(f"blobs must be file:///DIR or s3://BUCKET/PREFIX, not {url!r}")


def reach_blobs(url: str | None) -> None:
    """Check now that an `s3://` store answers and its bucket exists (one-line StoreError if not).

    The CLI calls it before a plane starts, so a wrong bucket stops `flowctl serve` before an
    admin key is generated or a port is bound.
    """
    where = check_blobs_url(url)
    if isinstance(where, str):
        from runtime.hub.s3client import check_bucket, make_client, parse_s3_url

        location = parse_s3_url(where)
        check_bucket(make_client(location), location)


def open_hub_data(data_dir: str | os.PathLike[str], blobs: str | None = None,
                  state: State | None = None) -> HubData:
    """Open the hub's data dir with its blobs where `blobs` says (blocking: call in a thread).

    `state` (PostgreSQL) holds the catalog instead of DATA_DIR/catalog.sqlite3, which is then
    never created: an offline `flowctl hub gc` on that dir refuses rather than see no references.
    """
    where = check_blobs_url(blobs)
    if where is None or isinstance(where, Path):
        return open_data_dir(data_dir, blob_root=where, state=state)
    from runtime.hub.s3blobs import S3BlobStore

    data = open_data_dir(data_dir, state=state)
    try:
        data.remote = S3BlobStore.connect(where, data.store)
    except BaseException:
        data.close()
        raise
    return data
