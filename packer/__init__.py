"""Service bundles: manifest, pack, verify, unpack, sign. Knows nothing of HTTP or Trio."""

from packer.errors import (
    BundleError,
    DigestMismatch,
    LimitExceeded,
    ManifestError,
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

__all__ = [
    "BUNDLE_FORMAT",
    "MANIFEST_NAME",
    "MODEL_ID_PATTERN",
    "SERVICE_ID_PATTERN",
    "SIGNATURE_NAME",
    "BundleError",
    "DigestMismatch",
    "FileEntry",
    "HealthCheck",
    "LimitExceeded",
    "Manifest",
    "ManifestError",
    "ModelSpec",
    "PackerError",
    "Resources",
    "SignatureError",
    "Version",
    "canonical_json",
    "check_path",
    "is_version",
    "parse_bundle_manifest",
    "parse_source_manifest",
    "parse_version",
]
