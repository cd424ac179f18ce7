"""Garbage collection of blobs that no version refers to, safe beside a running publish.

Why it is safe: a publish leases every digest it is about to look for or write,
in a write transaction, before touching the blob store. GC decides each deletion
inside a write transaction too (BEGIN IMMEDIATE), re-reading leases and
references there. So either GC deletes first and the publish, finding no blob,
writes it again; or the lease is visible and GC keeps the blob. On top of that,
a blob whose mtime is after GC started (written or deduplicated since) is kept.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass

from hub_store.blobs import BlobInfo, BlobStore
from hub_store.catalog import Catalog
from hub_store.errors import BlobNotFound

_BATCH = 256


@dataclass(frozen=True)
class GcReport:
    """What one GC pass found and did."""

    scanned: int
    deleted: int
    freed_bytes: int
    kept_recent: int
    kept_leased: int
    temp_removed: int
    dry_run: bool

    def to_dict(self) -> dict[str, int | bool]:
        """JSON form."""
        return dict(self.__dict__)


def collect_garbage(store: BlobStore, catalog: Catalog, *, min_age_s: float = 0.0,
                    temp_max_age_s: float = 24 * 3600, dry_run: bool = False) -> GcReport:
    """Delete unreferenced blobs older than the GC start (minus `min_age_s`) and stale tmp/ files."""
    started = time.time()
    cutoff = started - min_age_s
    catalog.purge_expired_leases()
    referenced = catalog.referenced_digests()
    scanned = kept_recent = 0
    candidates: list[BlobInfo] = []
    for info in store.iter_blobs():
        scanned += 1
        if info.digest in referenced:
            continue
        if info.mtime >= cutoff:
            kept_recent += 1
            continue
        candidates.append(info)

    deleted = freed = kept_leased = 0
    for i in range(0, len(candidates), _BATCH):
        with catalog.transaction() as db:
            leased = catalog.live_leases(db)
            for info in candidates[i:i + _BATCH]:
                if info.digest in leased or catalog.is_referenced(db, info.digest):
                    kept_leased += 1
                    continue
                try:
                    if store.stat(info.digest).mtime >= cutoff:
                        kept_recent += 1
                        continue
                except BlobNotFound:  # deleted meanwhile (a GC beside this one)
                    continue
                if not dry_run and store.delete(info.digest):
                    deleted += 1
                    freed += info.size
                elif dry_run:
                    deleted += 1
                    freed += info.size

    temp_removed = 0
    for path, mtime in list(store.iter_temp()):
        if mtime < started - temp_max_age_s:
            if not dry_run:
                if path.is_dir() and not path.is_symlink():  # a zip import's work directory
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            temp_removed += 1
    return GcReport(scanned, deleted, freed, kept_recent, kept_leased, temp_removed, dry_run)
