"""Consistency check of the store against the catalog: corrupt, missing and stray blobs."""

from __future__ import annotations

from dataclasses import dataclass

from hub_store.blobs import BlobStore
from hub_store.catalog import Catalog


@dataclass(frozen=True)
class FsckReport:
    """What fsck found: blobs that fail their digest, referenced blobs that are absent, strays."""

    checked: int
    checked_bytes: int
    corrupt: tuple[str, ...]
    missing: tuple[tuple[str, str], ...]  # (digest, where it is referenced)
    unreferenced: int
    quarantined: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when nothing is corrupt or missing (strays are GC's business)."""
        return not self.corrupt and not self.missing

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        return {"ok": self.ok, "checked": self.checked, "checked_bytes": self.checked_bytes,
                "corrupt": [f"sha256:{d}" for d in self.corrupt],
                "missing": [{"digest": f"sha256:{d}", "referenced_by": w} for d, w in self.missing],
                "unreferenced": self.unreferenced,
                "quarantined": [f"sha256:{d}" for d in self.quarantined]}


def fsck(store: BlobStore, catalog: Catalog, *, quarantine: bool = False) -> FsckReport:
    """Hash every blob; list corrupt ones (moved to quarantine/ if asked) and missing references."""
    references = catalog.references()
    corrupt: list[str] = []
    checked = checked_bytes = unreferenced = 0
    present: set[str] = set()
    for info in store.iter_blobs():
        checked += 1
        checked_bytes += info.size
        if store.hash_file(info.digest) != info.digest:
            corrupt.append(info.digest)
        else:
            present.add(info.digest)
        if info.digest not in references:
            unreferenced += 1
    missing = tuple(sorted((d, where) for d, where in references.items() if d not in present
                           and d not in corrupt))
    quarantined = tuple(d for d in corrupt if quarantine and store.quarantine(d) is not None)
    return FsckReport(checked, checked_bytes, tuple(corrupt), missing, unreferenced, quarantined)
