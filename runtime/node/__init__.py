"""The node package manager: install service versions from a hub, switch, verify, remove.

Library first; `flowctl node …` is a thin CLI over these names.
"""

from runtime.node.activate import ActivateResult, activate
from runtime.node.download import FetchPolicy, FetchResult, fetch_blob
from runtime.node.errors import (
    BlobMismatch,
    DowngradeRefused,
    DownloadFailed,
    InvalidReference,
    NodeError,
    NotEnoughSpace,
    NotInstalled,
    TransferStalled,
    TrustRefused,
    VerifyFailed,
    VersionInUse,
)
from runtime.node.install import InstallOptions, InstallReport, install
from runtime.node.layout import NodeLayout
from runtime.node.manage import GcReport, InstalledVersion, gc, list_installed, uninstall, use
from runtime.node.trust import load_trusted_keys
from runtime.node.venv import VenvFailed
from runtime.node.verify import VerifyReport, verify_installed

__all__ = [
    "ActivateResult", "BlobMismatch", "DowngradeRefused", "DownloadFailed", "FetchPolicy",
    "FetchResult", "GcReport", "InstallOptions", "InstallReport",
    "InstalledVersion", "InvalidReference", "NodeError", "NodeLayout", "NotEnoughSpace", "NotInstalled",
    "TransferStalled", "TrustRefused", "VenvFailed", "VerifyFailed", "VerifyReport",
    "VersionInUse", "activate", "fetch_blob", "gc", "install", "list_installed",
    "load_trusted_keys", "uninstall", "use", "verify_installed",
]
