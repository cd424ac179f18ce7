"""The packer's errors, one hierarchy.

    PackerError
    ├── ManifestError        service.json is missing, malformed or invalid
    ├── BundleError          a bundle is corrupt, hostile or does not match its manifest
    │   └── LimitExceeded    a bundle exceeds a size limit (total, per file, decompressed)
    ├── DigestMismatch       a digest differs from the expected one
    └── SignatureError       a signature is missing, malformed or does not verify
"""

from __future__ import annotations


class PackerError(Exception):
    """Base of every error raised by `packer`; its message is one line for the user."""


class ManifestError(PackerError):
    """service.json is missing, malformed or fails validation."""

    def __init__(self, problem: str, *, field: str | None = None, source: str = "service.json"):
        self.problem = problem
        self.field = field
        self.source = source
        where = f"{source}: {field} " if field else f"{source}: "
        super().__init__(f"{where}{problem}")


class BundleError(PackerError):
    """A bundle is corrupt, hostile, or disagrees with its manifest."""

    def __init__(self, problem: str, *, member: str | None = None):
        self.problem = problem
        self.member = member
        super().__init__(f"{member!r}: {problem}" if member else problem)


class LimitExceeded(BundleError):
    """A bundle, a file in it, or its decompressed stream exceeds a configured limit."""


class DigestMismatch(PackerError):
    """A SHA-256 digest differs from the one expected."""

    def __init__(self, what: str, expected: str, actual: str):
        self.what = what
        self.expected = expected
        self.actual = actual
        super().__init__(f"{what}: sha256 mismatch (expected {expected}, got {actual})")


class SignatureError(PackerError):
    """A signature is missing, malformed, made by an untrusted key, or does not verify."""
