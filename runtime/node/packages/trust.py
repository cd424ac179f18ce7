"""Signature policy: with trusted keys configured, only versions they signed are accepted."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime.node.packages.errors import TrustRefused


def load_trusted_keys(paths: Sequence[str | os.PathLike[str]]) -> tuple[Any, ...]:
    """Load Ed25519 public keys (PEM); a directory contributes every `*.pub` in it."""
    from packer.signing import load_public_key

    keys: list[Any] = []
    for p in map(Path, paths):
        files = sorted(p.glob("*.pub")) if p.is_dir() else [p]
        keys.extend(load_public_key(f) for f in files)
    return tuple(keys)


def check_trust(service: str, version: str, manifest_raw: bytes, signature: bytes | None,
                trusted_keys: Sequence[Any]) -> str | None:
    """The signing key's id, or None when no key is trusted; TrustRefused otherwise."""
    if not trusted_keys:
        return None
    if signature is None:
        raise TrustRefused(service, version, "it is unsigned and trusted keys are configured")
    from packer.errors import SignatureError
    from packer.signing import verify_signature

    try:
        return verify_signature(manifest_raw, signature, trusted_keys)
    except SignatureError as exc:
        raise TrustRefused(service, version, str(exc)) from None
