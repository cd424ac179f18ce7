"""Service bundles: manifest, pack, verify, unpack, sign. Knows nothing of HTTP or Trio."""

from packer.errors import (
    BundleError,
    DigestMismatch,
    LimitExceeded,
    ManifestError,
    NotABundle,
    PackerError,
    SignatureError,
)
from packer.manifest import (
    BUNDLE_FORMAT,
    MANIFEST_NAME,
    MODEL_ID_PATTERN,
    SERVICE_ID_PATTERN,
    SIGNATURE_NAME,
    FileEntry,
    HealthCheck,
    Manifest,
    ModelSpec,
    Resources,
    canonical_json,
    check_path,
    parse_bundle_manifest,
    parse_source_manifest,
)
from packer.semver import Version, is_version, parse_version

# The rest of the API is imported on first use (PEP 562), so `import packer.manifest`
# or `flowctl pack` does not pay for the reader, zip export and threading modules.
_LAZY = {
    "sha256_file": "packer.hashing",
    "Limits": "packer.limits",
    "PackResult": "packer.pack",
    "pack_dir": "packer.pack",
    "BundleReader": "packer.reader",
    "open_bundle": "packer.reader",
    "PublicKey": "packer.signing",
    "generate_keypair": "packer.signing",
    "key_id": "packer.signing",
    "load_private_key": "packer.signing",
    "load_public_key": "packer.signing",
    "sign_manifest": "packer.signing",
    "verify_signature": "packer.signing",
    "SourceError": "packer.source",
    "unpack_bundle": "packer.unpack",
    "VerifyReport": "packer.verify",
    "verify_bundle": "packer.verify",
    "write_zip": "packer.zipexport",
    "ZipRefused": "packer.zipcheck",
    "bundle_from_zip": "packer.zipimport",
    "is_zip": "packer.zipimport",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'packer' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "BUNDLE_FORMAT",
    "MANIFEST_NAME",
    "MODEL_ID_PATTERN",
    "SERVICE_ID_PATTERN",
    "SIGNATURE_NAME",
    "BundleError",
    "BundleReader",
    "DigestMismatch",
    "FileEntry",
    "HealthCheck",
    "LimitExceeded",
    "Limits",
    "Manifest",
    "ManifestError",
    "ModelSpec",
    "NotABundle",
    "PackResult",
    "PackerError",
    "PublicKey",
    "Resources",
    "SignatureError",
    "SourceError",
    "VerifyReport",
    "ZipRefused",
    "Version",
    "bundle_from_zip",
    "canonical_json",
    "check_path",
    "generate_keypair",
    "is_version",
    "is_zip",
    "key_id",
    "load_private_key",
    "load_public_key",
    "open_bundle",
    "pack_dir",
    "parse_bundle_manifest",
    "parse_source_manifest",
    "parse_version",
    "sha256_file",
    "sign_manifest",
    "unpack_bundle",
    "verify_bundle",
    "verify_signature",
    "write_zip",
]
