"""Re-check an installed tree against its manifest, naming every file that differs."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hub_store.blobs import LocalBlobStore
from packer.manifest import MANIFEST_NAME, SIGNATURE_NAME
from runtime.node.packages.errors import NotInstalled, VerifyFailed
from runtime.node.packages.fsutil import CHUNK, EXEC_MODE, FILE_MODE
from runtime.node.packages.layout import NodeLayout
from runtime.node.packages.trust import check_trust


@dataclass(frozen=True)
class VerifyReport:
    """A tree that matched its manifest."""

    service: str
    version: str
    files: int
    bytes: int
    signed_by: str | None


def verify_installed(layout: NodeLayout, service: str, version: str | None = None, *,
                     trusted_keys: Sequence[Any] = ()) -> VerifyReport:
    """Hash every file of `service@version` (default: current); VerifyFailed names what differs.

    Blocking: run it in a thread from async code.
    """
    if version is None:
        version = layout.current_version(service)
        if version is None:
            raise NotInstalled(service)
    root = layout.version_dir(service, version)
    if not (root / MANIFEST_NAME).is_file():
        raise NotInstalled(service, version)
    manifest, raw = layout.read_manifest(service, version)
    signed_by = check_trust(service, version, raw, layout.read_signature(service, version),
                            trusted_keys)
    problems = []
    expected = {f.path for f in manifest.files} | {MANIFEST_NAME, SIGNATURE_NAME}
    for f in manifest.files:
        path = root / f.path
        try:
            st = path.lstat()
        except FileNotFoundError:
            problems.append(f"{f.path!r} is missing")
            continue
        if not stat.S_ISREG(st.st_mode):
            problems.append(f"{f.path!r} is not a regular file")
            continue
        want_mode = EXEC_MODE if f.executable else FILE_MODE
        if st.st_size != f.size:
            problems.append(f"{f.path!r} changed (size {st.st_size}, expected {f.size})")
        elif _sha256(path) != f.sha256:
            problems.append(f"{f.path!r} changed (content differs from sha256 {f.sha256[:12]}…)")
            _drop_shared_blob(layout, path, f.sha256)
        elif stat.S_IMODE(st.st_mode) != want_mode:
            problems.append(f"{f.path!r} has mode {oct(stat.S_IMODE(st.st_mode))}, "
                            f"expected {oct(want_mode)}")
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            if rel not in expected:
                problems.append(f"{rel!r} is not in the manifest")
    if problems:
        raise VerifyFailed(service, version, problems)
    return VerifyReport(service, version, len(manifest.files), manifest.total_size, signed_by)


def _drop_shared_blob(layout: NodeLayout, path: os.PathLike[str], digest: str) -> None:
    # A hard-linked file changed in place corrupts the store's blob too; drop it so the
    # next install fetches a good copy instead of linking the bad one again.
    store = LocalBlobStore(layout.root)
    try:
        if os.path.samefile(store.path(digest), path):
            store.delete(digest)
    except FileNotFoundError:
        pass


def _sha256(path: os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()
