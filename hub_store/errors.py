"""The store's errors, one hierarchy.

    StoreError
    ├── BlobNotFound       no blob with that digest
    ├── BlobCorrupt        a stored blob's bytes no longer match its digest
    ├── BlobDigestMismatch bytes written under an expected digest hashed to another one
    ├── NotFound           no such service, version or model in the catalog
    ├── BadBundle          an upload is not the bundle it claims to be
    ├── Conflict           a write contradicts what is stored (e.g. re-publish with other bytes)
    ├── InsufficientStorage the disk cannot hold a write (checked up front, or it filled up)
    ├── BlobStoreUnavailable a remote blob store (an S3 bucket) cannot be reached or refused a call
    └── InvalidIdentifier  an id, version or digest does not parse
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error raised by `hub_store`; its message is one line for the user."""


class BlobNotFound(StoreError):
    """No blob with that digest is stored."""

    def __init__(self, digest: str):
        self.digest = digest
        super().__init__(f"blob sha256:{digest} not found")


class BlobCorrupt(StoreError):
    """A stored blob no longer hashes to its name."""

    def __init__(self, digest: str, actual: str):
        self.digest = digest
        self.actual = actual
        super().__init__(f"blob sha256:{digest} is corrupt on disk (hashes to {actual})")


class BlobDigestMismatch(StoreError):
    """Bytes written under an expected digest hashed to something else."""

    def __init__(self, what: str, expected: str, actual: str):
        self.what = what
        self.expected = expected
        self.actual = actual
        super().__init__(f"{what}: sha256 mismatch (expected {expected}, got {actual})")


class NotFound(StoreError):
    """No such service, version or model."""


class BadBundle(StoreError):
    """An upload is not what its request said (another service or version)."""


class Conflict(StoreError):
    """The write contradicts stored state."""


class InsufficientStorage(StoreError):
    """The disk cannot hold `what`: `needed` bytes (when known) above a `reserve`, `free` free.

    Without numbers the disk filled up during the write (ENOSPC, SQLITE_FULL).
    """

    def __init__(self, what: str, *, needed: int | None = None, free: int | None = None, reserve: int = 0):
        self.what = what
        self.needed = needed
        self.free = free
        self.reserve = reserve
        if needed is None:
            message = f"the hub's disk is full: {what} could not be stored; free some space and retry"
        else:
            message = (f"not enough disk space for {what}: needs {needed} bytes, {max(free or 0, 0)} free "
                       f"(of which {reserve} are kept in reserve)")
        super().__init__(message)


class BlobStoreUnavailable(StoreError):
    """A remote blob store (an S3-compatible bucket) cannot be reached, is missing, or refused a call."""


class InvalidIdentifier(StoreError, ValueError):
    """An identifier from outside failed to parse."""

    def __init__(self, kind: str, value: object):
        self.kind = kind
        self.value = value
        shown = value if not isinstance(value, str) or len(value) <= 80 else value[:80] + "..."
        super().__init__(f"invalid {kind}: {shown!r}")
