"""A hub's data directory: the blob store and the catalog side by side."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hub_store.blobs import BlobStore, LocalBlobStore
from hub_store.catalog import Catalog
from hub_store.private import make_private_dir
from hub_store.sql.state import State

CATALOG_NAME = "catalog.sqlite3"


@dataclass
class HubData:
    """The opened data dir: `store` (its own blobs and tmp/), `catalog`; close() when done.

    `blobs` is where the hub keeps its blobs: `store` itself by default, or a remote store
    (S3-compatible) that spools through `store`'s tmp/.
    """

    root: Path
    store: LocalBlobStore
    catalog: Catalog
    remote: BlobStore | None = None

    @property
    def blobs(self) -> BlobStore:
        """The hub's blob store: the remote one when configured, else the data dir's."""
        return self.remote if self.remote is not None else self.store

    def close(self) -> None:
        """Close the catalog."""
        self.catalog.close()

    def __enter__(self) -> HubData:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_data_dir(root: str | os.PathLike[str], *, blob_root: str | os.PathLike[str] | None = None,
                  state: State | None = None) -> HubData:
    """Create (if needed) and open a hub data dir: `blobs/`, `tmp/`, `catalog.sqlite3`.

    `blob_root` puts `blobs/` and `tmp/` in another directory (`--blobs file:///DIR`);
    `state` puts the catalog in the plane's state database (`--state`) instead of the dir.
    The dirs are owner-only (0700) and the catalog 0600, tightened if an older flowctl left them looser.
    """
    root = make_private_dir(root)
    store = LocalBlobStore(make_private_dir(blob_root) if blob_root is not None else root)
    return HubData(root, store, Catalog(state if state is not None else root / CATALOG_NAME))
