"""Content-addressed blob store and the SQLite catalog. Knows nothing of HTTP or Trio."""

from hub_store import ids
from hub_store.blobs import CHUNK, BlobInfo, BlobSink, BlobStore, BlobWriter, LocalBlobStore
from hub_store.catalog import (
    Catalog,
    FileRecord,
    ModelRecord,
    NewVersion,
    ServiceRecord,
    VersionRecord,
    pick_latest,
)
from hub_store.datadir import HubData, open_data_dir
from hub_store.errors import (
    BadBundle,
    BlobCorrupt,
    BlobDigestMismatch,
    BlobNotFound,
    BlobStoreUnavailable,
    Conflict,
    InsufficientStorage,
    InvalidIdentifier,
    NotFound,
    StoreError,
)
from hub_store.fsck import FsckReport, fsck
from hub_store.gc import GcReport, collect_garbage
from hub_store.private import make_private_database, make_private_dir
from hub_store.publish import PublishResult, copy_to_temp, export_zip, ingest_bundle, publish_file
from hub_store.space import DEFAULT_RESERVE_BYTES, SpaceGuard, disk_free_bytes, is_disk_full

__all__ = [
    "BadBundle",
    "CHUNK",
    "BlobCorrupt",
    "BlobDigestMismatch",
    "BlobInfo",
    "BlobNotFound",
    "BlobStoreUnavailable",
    "BlobSink",
    "BlobStore",
    "BlobWriter",
    "Catalog",
    "Conflict",
    "DEFAULT_RESERVE_BYTES",
    "FileRecord",
    "FsckReport",
    "GcReport",
    "HubData",
    "InsufficientStorage",
    "InvalidIdentifier",
    "LocalBlobStore",
    "ModelRecord",
    "NewVersion",
    "NotFound",
    "PublishResult",
    "ServiceRecord",
    "SpaceGuard",
    "StoreError",
    "VersionRecord",
    "collect_garbage",
    "copy_to_temp",
    "disk_free_bytes",
    "export_zip",
    "fsck",
    "ids",
    "ingest_bundle",
    "is_disk_full",
    "make_private_database",
    "make_private_dir",
    "open_data_dir",
    "pick_latest",
    "publish_file",
]
