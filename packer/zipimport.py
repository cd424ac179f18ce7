"""A seed zip (service.json + files + checksum.sha256, as seed 001's upload tool sends) -> a bundle.

The zip is checked from its central directory first (`packer.zipcheck`: paths, kinds,
duplicates, overlap, sizes, ratio, checksum.sha256), then its files are extracted into a
private work directory, each one's bytes counted against its declared size and hashed
against checksum.sha256, and the directory is packed like any source (`pack_dir`). Each
file gets its member's timestamp, so the same zip always gives the same bundle bytes
(created_at comes from service.json, else from the newest member). The work directory is
removed whatever happens; only the bundle is left in `out_dir`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
import zlib
from calendar import timegm
from collections.abc import Callable
from pathlib import Path
from typing import IO

from packer.limits import Limits
from packer.manifest import MANIFEST_NAME, parse_source_manifest
from packer.pack import PackResult, pack_dir
from packer.zipcheck import (
    CHECKSUM_NAME,
    DEFAULT_MAX_RATIO,
    ZipMember,
    ZipPlan,
    ZipRefused,
    check_zip,
    parse_checksums,
)

ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_CHUNK = 1 << 20


def is_zip(path: Path) -> bool:
    """True when the file starts like a zip archive (a local header or an empty archive's end record)."""
    with open(path, "rb") as f:
        return f.read(4) in ZIP_MAGICS


def bundle_from_zip(zip_path: Path, out_dir: Path, *, limits: Limits = Limits(),
                    max_ratio: int = DEFAULT_MAX_RATIO, level: int = 3,
                    reserve: Callable[[int], None] | None = None) -> PackResult:
    """Check the seed zip at `zip_path` and pack it into `out_dir`/NAME-VERSION.fbundle.

    `reserve(n)` is called with the bytes extraction will write before any is written (the
    hub checks its disk there). Error handling: ZipRefused (a BundleError) for a malformed or
    hostile archive or a file that does not match checksum.sha256, LimitExceeded for sizes,
    ManifestError for the zip's service.json; nothing is left behind in `out_dir` but the bundle.
    """
    out_dir = Path(out_dir)
    try:
        with open(zip_path, "rb") as raw, zipfile.ZipFile(zip_path) as zf:
            plan = check_zip(zf, raw, archive_size=os.fstat(raw.fileno()).st_size, limits=limits,
                             max_ratio=max_ratio)
            manifest_member = plan.member(MANIFEST_NAME)
            if manifest_member is None:  # check_zip found its root by it
                raise ZipRefused("has no service.json")
            parse_source_manifest(_read_small(zf, manifest_member), source=f"{MANIFEST_NAME} in the zip")
            checksum_member = plan.member(CHECKSUM_NAME)
            if checksum_member is not None:
                plan = parse_checksums(plan, _read_small(zf, checksum_member))
            if reserve is not None:
                reserve(plan.total_size)
            work = Path(tempfile.mkdtemp(dir=out_dir, prefix=".zip-import-"))
            try:
                source = work / "src"
                _extract(zf, plan, source)
                return pack_dir(source, out_dir, level=level)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    except zipfile.BadZipFile as exc:
        raise ZipRefused(f"not a readable zip archive ({exc})") from None
    except (zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise ZipRefused(f"the zip's data is corrupt ({exc})") from None


def _read_small(zf: zipfile.ZipFile, member: ZipMember) -> bytes:
    parts: list[bytes] = []
    with zf.open(member.info) as f:
        while (chunk := _read(f, member)) and sum(map(len, parts)) <= member.size:
            parts.append(chunk)
    data = b"".join(parts)
    if len(data) != member.size:
        raise ZipRefused(f"holds {len(data)} bytes, not the {member.size} its entry declares", member=member.path)
    return data


def _read(src: IO[bytes], member: ZipMember) -> bytes:
    try:
        return src.read(_CHUNK)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ZipRefused(f"is corrupt ({exc})", member=member.path) from None


def _extract(zf: zipfile.ZipFile, plan: ZipPlan, dest: Path) -> None:
    """Write each file (never following links, never outside `dest`), checking size and digest."""
    dest.mkdir(mode=0o700)
    for member in plan.files:
        if member.path == CHECKSUM_NAME:
            continue
        target = dest.joinpath(*member.path.split("/"))  # check_path refused '..', '/' and '\\'
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, member.mode)
        digest = hashlib.sha256()
        written = 0
        with os.fdopen(fd, "wb") as out, zf.open(member.info) as src:
            while chunk := _read(src, member):
                written += len(chunk)
                if written > member.size:
                    raise ZipRefused(f"expands past the {member.size} bytes its entry declares",
                                     member=member.path)
                digest.update(chunk)
                out.write(chunk)
        if written != member.size:
            raise ZipRefused(f"holds {written} bytes, not the {member.size} its entry declares", member=member.path)
        expected = plan.checksums.get(member.path)
        if expected is not None and digest.hexdigest() != expected:
            raise ZipRefused(f"does not match {CHECKSUM_NAME} (sha256 {digest.hexdigest()}, "
                             f"listed {expected})", member=member.path)
        os.chmod(target, member.mode)  # whatever the umask
        stamp = timegm(max(member.info.date_time, (1980, 1, 1, 0, 0, 0)))
        os.utime(target, (stamp, stamp))

