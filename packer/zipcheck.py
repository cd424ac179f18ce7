"""Hostile-archive checks for a seed zip, from its central directory alone (nothing extracted).

A zip someone uploads is untrusted: every member name must be a safe relative path (no
`..`, absolute or drive paths, backslashes, NUL or control characters), each at most once
(also ignoring case), none both a file and a directory; only regular files and directories
(no symlinks, devices, FIFOs), no encryption, only stored or deflated data; members must
not overlap in the archive (the overlapping-entries zip bomb), and the declared sizes, the
member count and the expansion ratio stay within limits. `checksum.sha256`, when present,
must be well-formed `sha256sum` lines naming every file of the package exactly once.
"""

from __future__ import annotations

import re
import stat
import struct
import zipfile
from dataclasses import dataclass
from typing import BinaryIO

from packer.errors import BundleError, LimitExceeded, ManifestError
from packer.limits import Limits
from packer.manifest import MANIFEST_NAME, check_path

CHECKSUM_NAME = "checksum.sha256"
# Deflate expands at most ~1032:1; real service packages (code, weights) stay far below 100:1.
DEFAULT_MAX_RATIO = 100
RATIO_FREE_BYTES = 64 << 20  # archives expanding to less than this are never refused for ratio
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_LOCAL_MAGIC = b"PK\x03\x04"
_SUPPORTED = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_LINE = re.compile(r"^([0-9A-Fa-f]{64}) [ *](.+)$")


class ZipRefused(BundleError):
    """A seed zip is malformed or hostile; the message names the member and the reason."""


@dataclass(frozen=True)
class ZipMember:
    """One regular file of the package, as the archive declares it."""

    info: zipfile.ZipInfo
    path: str  # relative to the package root
    size: int
    mode: int  # 0o644 or 0o755


@dataclass(frozen=True)
class ZipPlan:
    """What a checked zip holds: its files (by package path) and their expected digests."""

    files: tuple[ZipMember, ...]  # sorted by path, service.json and checksum.sha256 included
    root: str  # "" or "DIR/" when everything sits in one top-level directory
    checksums: dict[str, str]  # path -> sha256 from checksum.sha256 (empty without one)
    total_size: int

    def member(self, path: str) -> ZipMember | None:
        """The file at package path `path`, or None."""
        return next((m for m in self.files if m.path == path), None)


def check_zip(zf: zipfile.ZipFile, raw: BinaryIO, *, archive_size: int, limits: Limits = Limits(),
              max_ratio: int = DEFAULT_MAX_RATIO) -> ZipPlan:
    """Check every member of `zf` (whose bytes `raw` reads) and return the plan; ZipRefused otherwise."""
    infos = zf.infolist()
    if len(infos) > 2 * limits.max_files + 2:
        raise LimitExceeded(f"the zip has {len(infos)} members, more than this hub accepts")
    _check_layout(infos, raw, zf.start_dir)
    files: list[tuple[zipfile.ZipInfo, str, int]] = []
    dirs: set[str] = set()
    seen: dict[str, str] = {}
    total = 0
    for info in infos:
        name, is_dir = _check_name(info)
        mode = _check_kind(info, name, is_dir)
        folded = name.casefold()
        if folded in seen:
            other = seen[folded]
            raise ZipRefused("appears twice in the zip" if other == name else
                             f"collides with {other!r} ignoring case", member=name)
        seen[folded] = name
        if info.flag_bits & 0x1:
            raise ZipRefused("is encrypted", member=name)
        if info.compress_type not in _SUPPORTED:
            raise ZipRefused(f"uses compression method {info.compress_type} (only stored and deflated)",
                             member=name)
        parts = folded.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
        if is_dir:
            dirs.add(folded)
            continue
        if info.file_size > limits.max_file_bytes:
            raise LimitExceeded(f"declares {info.file_size} bytes, over the limit of {limits.max_file_bytes}",
                                member=name)
        total += info.file_size
        files.append((info, name, mode))
    for _info, name, _mode in files:
        if name.casefold() in dirs:
            raise ZipRefused("is both a file and a directory", member=name)
    if len(files) > limits.max_files + 2:
        raise LimitExceeded(f"the zip holds {len(files)} files, more than the limit of {limits.max_files}")
    if total > limits.max_total_bytes:
        raise LimitExceeded(f"the zip expands to {total} bytes, over the limit of {limits.max_total_bytes}")
    if total > RATIO_FREE_BYTES and total > max_ratio * max(archive_size, 1):
        raise LimitExceeded(f"the zip expands {total // max(archive_size, 1)}-fold ({total} bytes from "
                            f"{archive_size}), more than {max_ratio}-fold: refused as a zip bomb")
    root = _root({name for _, name, _ in files})
    members = tuple(sorted((ZipMember(info, name[len(root):], info.file_size, mode) for info, name, mode in files),
                           key=lambda m: m.path))
    plan = ZipPlan(members, root, {}, total)
    manifest = plan.member(MANIFEST_NAME)
    if manifest is not None and manifest.size > limits.max_manifest_bytes:
        raise LimitExceeded(f"is {manifest.size} bytes, over the limit of {limits.max_manifest_bytes}",
                            member=MANIFEST_NAME)
    return plan


def parse_checksums(plan: ZipPlan, text: bytes) -> ZipPlan:
    """The plan with the digests of its checksum.sha256, which must cover every file exactly once."""
    try:
        lines = text.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ZipRefused("is not UTF-8 text", member=CHECKSUM_NAME) from None
    sums: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        match = _LINE.match(line.rstrip("\r"))
        if match is None:
            raise ZipRefused(f"line {number} is not '<sha256>  <path>' (sha256sum format): "
                             f"{line[:80]!r}", member=CHECKSUM_NAME)
        digest, path = match.group(1).lower(), match.group(2).removeprefix("./")
        if path in sums:
            raise ZipRefused(f"line {number} lists {path!r} a second time", member=CHECKSUM_NAME)
        if path == CHECKSUM_NAME or plan.member(path) is None:
            raise ZipRefused(f"line {number} lists {path!r}, which is not a file of the zip",
                             member=CHECKSUM_NAME)
        sums[path] = digest
    if not sums:
        raise ZipRefused("lists no files", member=CHECKSUM_NAME)
    for m in plan.files:
        if m.path not in sums and m.path not in (CHECKSUM_NAME, MANIFEST_NAME):
            raise ZipRefused(f"is not listed in {CHECKSUM_NAME}", member=m.path)
    return ZipPlan(plan.files, plan.root, sums, plan.total_size)


def _check_name(info: zipfile.ZipInfo) -> tuple[str, bool]:
    raw = info.orig_filename
    if "\x00" in raw:
        raise ZipRefused("has a NUL byte in its name", member=raw.replace("\x00", "\\0"))
    is_dir = raw.endswith("/")
    name = raw[:-1] if is_dir else raw
    try:
        check_path(name)
    except ValueError as exc:
        raise ZipRefused(f"is not a safe relative path ({exc})", member=raw) from None
    return name, is_dir


def _check_kind(info: zipfile.ZipInfo, name: str, is_dir: bool) -> int:
    """0o644 or 0o755 for a file; refuse anything that is not a regular file or a directory."""
    unix = info.external_attr >> 16 if info.create_system == 3 else 0
    kind = stat.S_IFMT(unix)
    if stat.S_ISLNK(unix):
        raise ZipRefused("is a symbolic link (a package holds regular files only)", member=name)
    if kind and not (stat.S_ISREG(unix) or stat.S_ISDIR(unix)):
        raise ZipRefused("is not a regular file (device, FIFO or socket)", member=name)
    if kind and stat.S_ISDIR(unix) != is_dir:
        raise ZipRefused("is marked a directory but named like a file (or the reverse)", member=name)
    return 0o755 if unix & stat.S_IXUSR else 0o644


def _check_layout(infos: list[zipfile.ZipInfo], raw: BinaryIO, central_directory: int) -> None:
    """Every member's local header and data lie inside the archive, one after another, no overlap."""
    end = 0
    for info in sorted(infos, key=lambda i: i.header_offset):
        if info.header_offset < end:
            raise ZipRefused("overlaps another member (a zip bomb shape)", member=info.orig_filename)
        raw.seek(info.header_offset)
        header = raw.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or header[:4] != _LOCAL_MAGIC:
            raise ZipRefused("has no valid local header", member=info.orig_filename)
        fields = _LOCAL_HEADER.unpack(header)
        name_len, extra_len = fields[-2], fields[-1]
        end = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len + info.compress_size
        if end > central_directory:
            raise ZipRefused("runs past the start of the central directory", member=info.orig_filename)


def _root(names: set[str]) -> str:
    """"" when service.json is at the top; "DIR/" when every member is under DIR/ and it is there."""
    if MANIFEST_NAME in names:
        return ""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1:
        top = tops.pop() + "/"
        if top + MANIFEST_NAME in names and all(n.startswith(top) for n in names):
            return top
    raise ManifestError("not found at the top of the zip (nor in its one top-level directory)",
                        source=MANIFEST_NAME)
