"""The seed-compatible zip (service.json, the files, checksum.sha256), made from a bundle.

Deterministic like the bundle: entries in bundle order, timestamps from the
manifest's created_at, Unix modes kept. Files up to 64 MiB are deflated; larger
ones (model weights, which do not deflate) are stored, so a zip of a multi-GB
model takes seconds rather than minutes. checksum.sha256 lists service.json and
every file in sha256sum format.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import zipfile
from pathlib import Path

from packer.limits import Limits
from packer.manifest import MANIFEST_NAME
from packer.reader import open_bundle

DEFLATE_MAX = 64 << 20
CHECKSUM_NAME = "checksum.sha256"


def write_zip(bundle_path: Path, zip_path: Path, *, limits: Limits = Limits()) -> None:
    """Write the seed zip of the bundle at `bundle_path` to `zip_path` (atomically)."""
    zip_path = Path(zip_path)
    fd, tmp_name = tempfile.mkstemp(dir=zip_path.parent, prefix=f".{zip_path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, open(bundle_path, "rb", buffering=0) as f, \
                open_bundle(f, limits=limits, source=str(bundle_path)) as reader, zipfile.ZipFile(out, "w") as zf:
            stamp = _date_time(reader.manifest.created_at)
            lines = [f"{hashlib.sha256(reader.manifest_bytes).hexdigest()}  {MANIFEST_NAME}\n"]
            zf.writestr(_info(MANIFEST_NAME, stamp, 0o644, len(reader.manifest_bytes)), reader.manifest_bytes)
            for entry, chunks in reader.iter_files():
                info = _info(entry.path, stamp, entry.mode, entry.size)
                with zf.open(info, "w", force_zip64=entry.size >= zipfile.ZIP64_LIMIT) as member:
                    for chunk in chunks:
                        member.write(chunk)
                lines.append(f"{entry.sha256}  {entry.path}\n")
            checksum = "".join(lines).encode()
            zf.writestr(_info(CHECKSUM_NAME, stamp, 0o644, len(checksum)), checksum)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, zip_path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _date_time(created_at: str) -> tuple[int, int, int, int, int, int]:
    parsed = time.strptime(created_at[:19], "%Y-%m-%dT%H:%M:%S")
    return max(parsed[:6], (1980, 1, 1, 0, 0, 0))


def _info(name: str, stamp: tuple[int, int, int, int, int, int], mode: int, size: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=stamp)
    info.external_attr = (0o100000 | mode) << 16
    info.create_system = 3
    info.file_size = size
    if size <= DEFLATE_MAX:
        info.compress_type = zipfile.ZIP_DEFLATED
        info._compresslevel = 6  # type: ignore[attr-defined]  # no public setter before 3.13
    return info
