"""The node package manager's errors, one hierarchy.

    PackageError (runtime.errors.FlowError)
    ├── InvalidReference     a service id or version that does not parse
    ├── DownloadFailed       a blob could not be fetched after every retry
    │   └── TransferStalled  a transfer stayed below the minimum rate for the stall window
    ├── BlobMismatch         downloaded bytes do not hash to the digest the manifest names
    ├── NotEnoughSpace       free disk does not cover the install (numbers in the message)
    ├── TrustRefused         a signature is required and missing, or does not verify
    ├── DowngradeRefused     the version is lower than the current one
    ├── NotInstalled         no such installed service or version
    ├── VersionInUse         refusing to remove a running (or the current) version without force
    ├── VerifyFailed         an installed tree differs from its manifest
    └── VenvFailed           creating a version's virtualenv or installing its requirements failed
"""

from __future__ import annotations

from runtime.errors import FlowError


class PackageError(FlowError):
    """Base of the node package manager's errors."""


class InvalidReference(PackageError, ValueError):
    """A service id or version given to the node does not parse."""

    def __init__(self, kind: str, value: object):
        self.kind = kind
        self.value = value
        super().__init__(f"invalid {kind}: {value!r}")


class DownloadFailed(PackageError):
    """A blob could not be fetched after every retry."""

    def __init__(self, digest: str, attempts: int, last: str):
        self.digest = digest
        self.attempts = attempts
        self.last = last
        super().__init__(f"blob sha256:{digest} failed after {attempts} attempts: {last}")


class TransferStalled(PackageError):
    """Fewer than `min_rate` bytes per second arrived during a whole stall window."""

    def __init__(self, digest: str, received: int, window: float):
        self.digest = digest
        self.received = received
        self.window = window
        super().__init__(f"blob sha256:{digest} stalled: {received} bytes in {window:g} s")


class BlobMismatch(PackageError):
    """Downloaded bytes hash to something other than the expected digest."""

    def __init__(self, expected: str, actual: str, size: int):
        self.expected = expected
        self.actual = actual
        self.size = size
        super().__init__(f"blob sha256:{expected} arrived corrupt ({size} bytes hash to {actual})")


class NotEnoughSpace(PackageError):
    """Free disk does not cover the missing bytes, the unpacked size and the margin."""

    def __init__(self, path: str, needed: int, free: int, missing: int, unpacked: int, margin: int):
        self.path = path
        self.needed = needed
        self.free = free
        super().__init__(
            f"not enough disk space in {path!r}: need {needed} bytes (download {missing} + "
            f"unpacked {unpacked} + margin {margin}), {free} free"
        )


class TrustRefused(PackageError):
    """A signature is required and is missing or does not verify."""

    def __init__(self, service: str, version: str, problem: str):
        self.service = service
        self.version = version
        self.problem = problem
        super().__init__(f"refusing {service}@{version}: {problem}")


class DowngradeRefused(PackageError):
    """The version to install is lower than the current one."""

    def __init__(self, service: str, version: str, current: str):
        self.service = service
        self.version = version
        self.current = current
        super().__init__(
            f"refusing to downgrade {service!r} from {current!r} to {version!r} "
            "(pass --allow-downgrade)"
        )


class NotInstalled(PackageError):
    """No such installed service or version."""

    def __init__(self, service: str, version: str | None = None):
        self.service = service
        self.version = version
        what = f"{service}@{version}" if version else service
        super().__init__(f"{what!r} is not installed")


class VersionInUse(PackageError):
    """The version is (presumed) running; removing it needs force."""

    def __init__(self, service: str, version: str):
        self.service = service
        self.version = version
        super().__init__(f"{service}@{version} is the current version, presumed running "
                         "(pass --force to remove it)")


class VerifyFailed(PackageError):
    """An installed tree differs from its manifest; `problems` names each file."""

    def __init__(self, service: str, version: str, problems: list[str]):
        self.service = service
        self.version = version
        self.problems = problems
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        super().__init__(f"{service}@{version} does not match its manifest: {shown}")


class VenvFailed(PackageError):
    """Creating the virtualenv or installing the requirements failed."""

    def __init__(self, key: str, step: str, output: str):
        self.key = key
        self.step = step
        self.output = output
        tail = " ".join(output.strip().splitlines()[-1:])[:300]
        super().__init__(f"virtualenv {key}: {step} failed: {tail!r}")
