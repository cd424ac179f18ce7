"""Check a bundle end to end without unpacking it: `verify_bundle`."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from packer.errors import DigestMismatch, PackerError, SignatureError
from packer.filehash import FileHashProcess
from packer.limits import Limits
from packer.manifest import Manifest
from packer.reader import BundleReader, open_bundle
from packer.signing import PublicKey, signature_key_id, verify_signature

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class VerifyReport:
    """What `verify_bundle` checked."""

    path: Path
    sha256: str
    size: int
    manifest: Manifest
    file_count: int
    total_size: int
    signature: str  # "unsigned", "valid (KEYID)" or "signed by KEYID (not checked: no trusted key)"
    key_id: str | None = None


def check_signature(reader: BundleReader, trusted_keys: Sequence[PublicKey],
                    require_signature: bool) -> tuple[str, str | None]:
    """Apply the signature policy to an open bundle; return (status, key ID)."""
    if reader.signature is None:
        if require_signature:
            raise SignatureError("bundle is not signed, but a signature is required")
        return "unsigned", None
    if trusted_keys or require_signature:
        kid = verify_signature(reader.manifest_bytes, reader.signature, trusted_keys)
        return f"valid ({kid})", kid
    kid = signature_key_id(reader.signature)
    return f"signed by {kid} (not checked: no trusted key)", kid


def normalize_sha256(text: str) -> str:
    """Lower-case a hex SHA-256 given by a user; PackerError if it is not one."""
    value = text.strip().lower()
    if not _HEX64.match(value):
        raise PackerError(f"{text!r} is not a SHA-256 (64 hex digits)")
    return value


def verify_bundle(path: Path, *, expected_sha256: str | None = None,
                  trusted_keys: Sequence[PublicKey] = (), require_signature: bool = False,
                  limits: Limits = Limits(), progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Check digest, manifest, every member, every file's size and SHA-256, and the signature.

    One read of the file feeds the threads reading, decoding and parsing it and the members'
    SHA-256; the file's own SHA-256 is computed by a child process reading it again from the
    page cache (packer/filehash.py: no GIL shared with the decoder), or by a thread on the
    same reads for a small file. `progress` gets each increment of compressed bytes read.
    """
    path = Path(path)
    expected = normalize_sha256(expected_sha256) if expected_sha256 is not None else None

    def observe(chunk: memoryview) -> None:
        if progress is not None:
            progress(len(chunk))

    with open(path, "rb", buffering=0) as f:
        side = FileHashProcess.start(f.fileno())
        try:
            with open_bundle(f, limits=limits, observer=observe, source=str(path),
                             digest=side is None) as reader:
                status, kid = check_signature(reader, trusted_keys, require_signature)
                for _entry, chunks in reader.iter_files(views=True):
                    for _ in chunks:
                        pass
                size = reader.raw_size
                digest = reader.file_sha256() if side is None else side.hexdigest(size)
        finally:
            if side is not None:
                side.close()
    if expected is not None and digest != expected:
        raise DigestMismatch(f"bundle {path.name}", expected, digest)
    m = reader.manifest
    return VerifyReport(path=path, sha256=digest, size=size, manifest=m, file_count=len(m.files),
                        total_size=m.total_size, signature=status, key_id=kid)
