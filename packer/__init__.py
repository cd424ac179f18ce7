"""Service bundles: manifest, pack, verify, unpack, sign. Knows nothing of HTTP or Trio."""

from packer.errors import (
    BundleError,
    DigestMismatch,
    LimitExceeded,
    ManifestError,
    PackerError,
    SignatureError,
)
from packer.hashing import sha256_file
from packer.limits import Limits
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
from packer.pack import PackResult, pack_dir
from packer.reader import BundleReader, open_bundle
from packer.semver import Version, is_version, parse_version
from packer.signing import (
    PublicKey,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    sign_manifest,
    verify_signature,
)
from packer.source import SourceError
from packer.unpack import unpack_bundle
from packer.verify import VerifyReport, verify_bundle
from packer.zipexport import write_zip

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
    "PackResult",
    "PackerError",
    "PublicKey",
    "Resources",
    "SignatureError",
    "SourceError",
    "VerifyReport",
    "Version",
    "canonical_json",
    "check_path",
    "generate_keypair",
    "is_version",
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
