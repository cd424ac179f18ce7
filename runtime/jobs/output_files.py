"""What a finished command left under `$FLOWCTL_OUTPUT_DIR`: its files as artifacts to be, checked.

Every regular file below the output dir becomes one artifact named by its relative path. A
symbolic link is followed only while it stays inside the output dir; one that points outside
(`../../etc/passwd`, `/home/...`) is refused, and so is anything not a regular file (a fifo, a
socket, a device). A file over the per-file limit, more bytes in all than the per-attempt
limit, or more files than `max_files` is refused too, the reason naming the file and the
limit: the step fails with it and nothing is uploaded. Files are hashed (SHA-256) on the way.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from runtime.jobs.artifacts import ArtifactError, ArtifactLimits, ArtifactTooLarge, check_path

CHUNK = 1 << 20


@dataclass(frozen=True)
class OutputFile:
    """One file to become an artifact: its name, where it is, its size and SHA-256."""

    path: str
    source: Path
    size: int
    digest: str


def collect_outputs(output_dir: Path, limits: ArtifactLimits) -> list[OutputFile]:
    """The files under `output_dir`, checked and hashed; ArtifactError says which one is refused."""
    if not output_dir.is_dir():
        return []
    root = output_dir.resolve()
    found: list[tuple[str, Path, int]] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for name in sorted(dirnames):
            if (here / name).is_symlink():
                _inside(root, here / name)  # a linked directory inside is reached directly; skip it
                dirnames.remove(name)
        for name in sorted(filenames):
            source = here / name
            rel = source.relative_to(root).as_posix()
            target = _inside(root, source) if source.is_symlink() else source
            st = target.stat()
            if not stat.S_ISREG(st.st_mode):
                raise ArtifactError(f"artifact {rel!r} is not a regular file")
            check_path(rel)
            if st.st_size > limits.max_file_bytes:
                raise ArtifactTooLarge(f"artifact {rel!r} is {st.st_size} bytes, over the limit of "
                                       f"{limits.max_file_bytes} bytes per file")
            total += st.st_size
            if total > limits.max_total_bytes:
                raise ArtifactTooLarge(f"the artifacts exceed the limit of {limits.max_total_bytes} bytes "
                                       f"per attempt (at {rel!r})")
            found.append((rel, target, st.st_size))
            if len(found) > limits.max_files:
                raise ArtifactTooLarge(f"more than {limits.max_files} artifacts (the limit per attempt)")
    return [OutputFile(rel, source, size, _sha256(source)) for rel, source, size in sorted(found)]


def _inside(root: Path, link: Path) -> Path:
    """Where `link` leads, if that is inside `root`; else ArtifactError."""
    target = link.resolve()
    if target != root and root not in target.parents:
        raise ArtifactError(f"artifact {link.relative_to(root).as_posix()!r} is a symbolic link to "
                            f"{os.readlink(link)!r}, outside $FLOWCTL_OUTPUT_DIR: refused")
    if not target.exists():
        raise ArtifactError(f"artifact {link.relative_to(root).as_posix()!r} is a broken symbolic link")
    return target


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()
