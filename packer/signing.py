"""Ed25519 keys and detached manifest signatures.

Keys are PEM files: NAME.key (PKCS#8, mode 0600) and NAME.pub (SubjectPublicKeyInfo).
A key's ID is the first 16 hex digits of the SHA-256 of its raw 32-byte public key.
The `service.json.sig` member is canonical JSON:
`{"algorithm": "ed25519", "key_id": ..., "signature": base64(Ed25519(manifest bytes))}`.
`cryptography` is imported lazily so the CLI starts fast.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packer.errors import ManifestError, SignatureError
from packer.manifest import canonical_json, loads_json

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    PrivateKey = Ed25519PrivateKey
    PublicKey = Ed25519PublicKey
else:
    PrivateKey = Any
    PublicKey = Any

ALGORITHM = "ed25519"


def generate_keypair(path_prefix: Path) -> tuple[Path, Path]:
    """Write PREFIX.key (mode 0600) and PREFIX.pub; refuse to overwrite either."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path_prefix = Path(path_prefix)
    private_path = path_prefix.with_name(path_prefix.name + ".key")
    public_path = path_prefix.with_name(path_prefix.name + ".pub")
    for path in (private_path, public_path):
        if path.exists():
            raise SignatureError(f"{str(path)!r} already exists (not overwriting a key)")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    path_prefix.parent.mkdir(parents=True, exist_ok=True)
    _write_new(private_path, private_pem, 0o600)
    try:
        _write_new(public_path, public_pem, 0o644)
    except BaseException:
        private_path.unlink(missing_ok=True)
        raise
    return private_path, public_path


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def load_private_key(path: Path) -> PrivateKey:
    """Load an Ed25519 private key from a PEM file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{str(path)!r} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{str(path)!r} is not an Ed25519 key")
    return key


def load_public_key(path: Path) -> PublicKey:
    """Load an Ed25519 public key from a PEM file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{str(path)!r} is not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{str(path)!r} is not an Ed25519 key")
    return key


def key_id(public_key: PublicKey) -> str:
    """16 hex digits identifying a public key."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_manifest(manifest_bytes: bytes, private_key: PrivateKey) -> bytes:
    """The content of the service.json.sig member for these canonical manifest bytes."""
    signature = private_key.sign(manifest_bytes)
    return canonical_json({
        "algorithm": ALGORITHM,
        "key_id": key_id(private_key.public_key()),
        "signature": base64.b64encode(signature).decode(),
    })


def signature_key_id(signature: bytes) -> str:
    """The key ID a signature member names; SignatureError if it is malformed."""
    return _parse(signature)[0]


def _parse(signature: bytes) -> tuple[str, bytes]:
    try:
        data = loads_json(signature, source="service.json.sig")
    except ManifestError as exc:
        raise SignatureError(f"malformed signature: {exc}") from None
    if not isinstance(data, dict) or set(data) != {"algorithm", "key_id", "signature"}:
        raise SignatureError("malformed signature: expected algorithm, key_id and signature")
    if data["algorithm"] != ALGORITHM:
        raise SignatureError(f"unsupported signature algorithm {data['algorithm']!r}")
    kid, sig = data["key_id"], data["signature"]
    if not isinstance(kid, str) or len(kid) != 16 or not all(c in "0123456789abcdef" for c in kid):
        raise SignatureError(f"malformed signature: key_id {kid!r}")
    try:
        raw = base64.b64decode(sig, validate=True) if isinstance(sig, str) else b""
    except binascii.Error:
        raw = b""
    if len(raw) != 64:
        raise SignatureError("malformed signature: not a base64 Ed25519 signature")
    if canonical_json(data) != signature:
        raise SignatureError("malformed signature: not in canonical form")
    return kid, raw


def verify_signature(manifest_bytes: bytes, signature: bytes, trusted_keys: Sequence[PublicKey]) -> str:
    """Check `signature` over `manifest_bytes` with a trusted key; return that key's ID."""
    from cryptography.exceptions import InvalidSignature

    kid, raw = _parse(signature)
    if not trusted_keys:
        raise SignatureError(f"signed by key {kid}, but no trusted key was given")
    for key in trusted_keys:
        if key_id(key) == kid:
            try:
                key.verify(raw, manifest_bytes)
            except InvalidSignature:
                raise SignatureError(f"signature by key {kid} does not verify "
                                     "(the manifest was changed after signing)") from None
            return kid
    raise SignatureError(f"signed by key {kid}, which is not among the trusted keys")
