"""The node: its package manager, worker supervision, and the agent that joins it to a cluster.

    runtime.node.packages   install service versions from a hub, switch, verify, remove
    runtime.node.workers    run one worker process, gate it on health, restart it with backoff
    runtime.node.agent      the control-plane connection and the composition root (`run_node`)

This package re-exports the package manager, the library that `flowctl node …` drives;
the agent and the workers are imported from their own packages.
"""

from runtime.node.packages import (
    ActivateResult,
    BlobMismatch,
    DowngradeRefused,
    DownloadFailed,
    FetchPolicy,
    FetchResult,
    GcReport,
    InstalledVersion,
    InstallOptions,
    InstallReport,
    InvalidReference,
    NodeLayout,
    NotEnoughSpace,
    NotInstalled,
    PackageError,
    TransferStalled,
    TrustRefused,
    VenvFailed,
    VerifyFailed,
    VerifyReport,
    VersionInUse,
    activate,
    fetch_blob,
    gc,
    install,
    list_installed,
    load_trusted_keys,
    uninstall,
    use,
    verify_installed,
)

__all__ = [
    "ActivateResult", "BlobMismatch", "DowngradeRefused", "DownloadFailed", "FetchPolicy",
    "FetchResult", "GcReport", "InstallOptions", "InstallReport",
    "InstalledVersion", "InvalidReference", "NodeLayout", "NotEnoughSpace", "NotInstalled",
    "PackageError", "TransferStalled", "TrustRefused", "VenvFailed", "VerifyFailed", "VerifyReport",
    "VersionInUse", "activate", "fetch_blob", "gc", "install", "list_installed",
    "load_trusted_keys", "uninstall", "use", "verify_installed",
]
