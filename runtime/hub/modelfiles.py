"""A model's files as the seed's model API names them: paths relative to the model's own root."""

from __future__ import annotations

from hub_store import Catalog, FileRecord, ModelRecord

CHECKSUM_NAME = "checksum.sha256"


def model_files(catalog: Catalog, m: ModelRecord) -> list[tuple[str, FileRecord]]:
    """(path relative to the model, file) for every file of model `m`, sorted by bundle path.

    A model rooted at a directory has the files under it; a model that is one file has that
    file under its base name; a model without a path has every file of its bundle.
    """
    out = []
    for f in catalog.files(m.service_id, m.version):
        if not m.path:
            rel = f.path
        elif f.path == m.path:
            rel = f.path.rsplit("/", 1)[-1]
        elif f.path.startswith(m.path + "/"):
            rel = f.path[len(m.path) + 1:]
        else:
            continue
        out.append((rel, f))
    return out


def checksum_body(catalog: Catalog, m: ModelRecord) -> bytes:
    """`GET /storage/models/{id}/{version}/checksum.sha256`: sha256sum lines, one per model file.

    The format of `sha256sum` (digest, two spaces, path), so `sha256sum -c checksum.sha256`
    run in the directory the files were downloaded into checks them all.
    """
    return "".join(f"{f.sha256}  {rel}\n" for rel, f in model_files(catalog, m)).encode()
