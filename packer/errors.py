"""The packer's errors, one hierarchy.

    PackerError
    ├── ManifestError        service.json is missing, malformed or invalid
    ├── BundleError          a bundle is corrupt, hostile or does not match its manifest
    │   ├── NotABundle       the file is not a bundle at all (empty, or not a zstd stream)
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


class NotABundle(BundleError):
    """The input is not a flowctl bundle at all: it is empty or does not start with a zstd frame.

    `source` names the file when the caller knows it (`open_bundle(..., source=path)`).
    """

    def __init__(self, reason: str, *, source: str | None = None):
        self.reason = reason
        self.source = source
        what = f"{source!r} is not" if source else "not"
        super().__init__(f"{what} a flowctl bundle (.fbundle): {reason}")


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
