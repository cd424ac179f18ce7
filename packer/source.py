"""Read a source directory: its service.json, the files to pack, and the bundle's timestamp."""

from __future__ import annotations

import os
import stat
import time
from calendar import timegm
from dataclasses import dataclass
from pathlib import Path

from packer.errors import ManifestError, PackerError
from packer.ignore import IGNORE_FILE, IgnoreRules
from packer.manifest import (
    MANIFEST_NAME,
    RESERVED_NAMES,
    Manifest,
    check_path,
    parse_source_manifest,
)

# Never packed as files: the manifest and signature are members of their own, the
# seed zip's checksum.sha256 is regenerated, and the ignore file is packing metadata.
_SKIPPED_AT_ROOT = RESERVED_NAMES | {IGNORE_FILE}


class SourceError(PackerError):
    """The source directory holds something a bundle cannot carry."""

    def __init__(self, path: Path, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(f"{str(path)!r}: {problem}")


@dataclass(frozen=True)
class SourceFile:
    """A regular file to pack."""

    path: str  # relative, '/'-separated
    abspath: Path
    size: int
    mode: int  # 0o644 or 0o755
    mtime: int


@dataclass(frozen=True)
class Source:
    """A scanned source directory."""

    root: Path
    manifest: Manifest  # as written by the author: no `files` yet
    files: tuple[SourceFile, ...]  # sorted by path

    @property
    def total_size(self) -> int:
        """Bytes of file data to pack."""
        return sum(f.size for f in self.files)


def scan_source(src: Path, *, exclude: Path | None = None) -> Source:
    """Validate SRC/service.json and list the files to pack, sorted by path.

    `exclude` is a directory left out wherever it is (the output directory, when it
    lies inside SRC, as with `flowctl pack . -o dist`).
    """
    src = Path(src)
    if not src.is_dir():
        raise SourceError(src, "is not a directory")
    manifest_path = src / MANIFEST_NAME
    try:
        raw = manifest_path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"not found in {str(src)!r} (`flowctl pack DIR --id ID --version X.Y.Z` "
                            "generates one)", source=MANIFEST_NAME) from None
    manifest = parse_source_manifest(raw, source=MANIFEST_NAME)
    rules = IgnoreRules.for_source(src)
    files: list[SourceFile] = []
    skip = None
    if exclude is not None and exclude.exists():
        st = exclude.stat()
        skip = (st.st_dev, st.st_ino)
    _walk(src, "", rules, files, skip)
    files.sort(key=lambda f: f.path)
    return Source(root=src, manifest=manifest, files=tuple(files))


def _walk(directory: Path, prefix: str, rules: IgnoreRules, out: list[SourceFile],
          skip: tuple[int, int] | None) -> None:
    with os.scandir(directory) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        rel = prefix + entry.name
        if not prefix and entry.name in _SKIPPED_AT_ROOT:
            continue
        st = entry.stat(follow_symlinks=False)
        is_dir = stat.S_ISDIR(st.st_mode)
        if rules.ignored(rel, is_dir=is_dir):
            continue
        path = Path(entry.path)
        try:
            check_path(rel)
        except ValueError as exc:
            raise SourceError(path, f"cannot be packed: {exc}") from None
        if is_dir:
            if (st.st_dev, st.st_ino) != skip:
                _walk(path, rel + "/", rules, out, skip)
        elif stat.S_ISREG(st.st_mode):
            mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
            out.append(SourceFile(rel, path, st.st_size, mode, int(st.st_mtime)))
        elif stat.S_ISLNK(st.st_mode):
            raise SourceError(path, "is a symbolic link (bundles hold regular files only; "
                                    "copy the target or list it in .flowctlignore)")
        else:
            raise SourceError(path, f"is a {_kind(st.st_mode)} (bundles hold regular files only)")


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device file"
    return "special file"


def bundle_mtime(source: Source) -> tuple[int, str]:
    """(tar mtime, created_at) for a bundle of `source`.

    The mtime is SOURCE_DATE_EPOCH if set, else the manifest's created_at, else
    the newest source file's mtime. created_at is the manifest's own when given,
    else that same time.
    """
    epoch_env = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    created_at = source.manifest.created_at
    if epoch_env:
        if not epoch_env.isdigit():
            raise PackerError(f"SOURCE_DATE_EPOCH {epoch_env!r} is not a number of seconds")
        mtime = int(epoch_env)
    elif created_at:
        mtime = timegm(time.strptime(created_at[:19], "%Y-%m-%dT%H:%M:%S"))
    else:
        newest = [f.mtime for f in source.files]
        newest.append(int((source.root / MANIFEST_NAME).stat().st_mtime))
        mtime = max(0, max(newest))
    mtime = min(mtime, 8**11 - 1)
    if not created_at:
        created_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime))
    return mtime, created_at
