"""The node package manager: install service versions from a hub, switch, verify, remove.

Library first; `flowctl node …` is a thin CLI over these names. Errors: see
`runtime.node.packages.errors` (PackageError and its subclasses).
"""

from runtime.node.packages.activate import ActivateResult, activate
from runtime.node.packages.download import FetchPolicy, FetchResult, fetch_blob
from runtime.node.packages.errors import (
    BlobMismatch,
    DowngradeRefused,
    DownloadFailed,
    InvalidReference,
    NotEnoughSpace,
    NotInstalled,
    PackageError,
    TransferStalled,
    TrustRefused,
    VenvFailed,
    VerifyFailed,
    VersionInUse,
)
from runtime.node.packages.install import InstallOptions, InstallReport, install
from runtime.node.packages.layout import NodeLayout
from runtime.node.packages.manage import (
    GcReport,
    InstalledVersion,
    gc,
    list_installed,
    uninstall,
    use,
)
from runtime.node.packages.trust import load_trusted_keys
from runtime.node.packages.venv import venv_key
from runtime.node.packages.verify import VerifyReport, verify_installed

__all__ = [
    "ActivateResult", "BlobMismatch", "DowngradeRefused", "DownloadFailed", "FetchPolicy",
    "FetchResult", "GcReport", "InstallOptions", "InstallReport", "InstalledVersion",
    "InvalidReference", "NodeLayout", "NotEnoughSpace", "NotInstalled", "PackageError",
    "TransferStalled", "TrustRefused", "VenvFailed", "VerifyFailed", "VerifyReport",
    "VersionInUse", "activate", "fetch_blob", "gc", "install", "list_installed",
    "load_trusted_keys", "uninstall", "use", "venv_key", "verify_installed",
]
