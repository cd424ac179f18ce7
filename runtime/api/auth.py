"""The control plane's admin key: taken from FLOWCTL_ADMIN_KEY, else generated once; stored hashed."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

KEY_FILE = "admin_key.sha256"
KEY_PREFIX = "fck_"


def hash_key(key: str) -> str:
    """sha256 hex of a key (what is stored and compared)."""
    return hashlib.sha256(key.encode()).hexdigest()


def ensure_admin_key(data_dir: Path, env_key: str | None) -> tuple[str, str | None]:
    """(hash of the admin key, the new key if one was generated now, to print once).

    A key given by the environment replaces the stored hash, so rotating is restarting
    with a new FLOWCTL_ADMIN_KEY.
    """
    path = data_dir / KEY_FILE
    if env_key:
        digest = hash_key(env_key)
        _write(path, digest)
        return digest, None
    if path.is_file():
        stored = path.read_text().strip()
        if len(stored) == 64:
            return stored, None
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    digest = hash_key(key)
    _write(path, digest)
    return digest, key


def _write(path: Path, digest: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(digest + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def bearer_ok(authorization: str | None, key_hash: str) -> bool:
    """True when `Authorization: Bearer <key>` carries the admin key (constant-time compare)."""
    if not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    return hmac.compare_digest(hash_key(token.strip()), key_hash)
