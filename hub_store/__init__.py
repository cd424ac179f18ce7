"""Content-addressed blob store and the SQLite catalog. Knows nothing of HTTP or Trio."""

from hub_store import ids
from hub_store.blobs import CHUNK, BlobInfo, BlobStore, BlobWriter, LocalBlobStore
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
    Conflict,
    InvalidIdentifier,
    NotFound,
    StoreError,
)
from hub_store.fsck import FsckReport, fsck
from hub_store.gc import GcReport, collect_garbage
from hub_store.private import make_private_database, make_private_dir
from hub_store.publish import PublishResult, copy_to_temp, export_zip, ingest_bundle, publish_file

__all__ = [
    "BadBundle",
    "CHUNK",
    "BlobCorrupt",
    "BlobDigestMismatch",
    "BlobInfo",
    "BlobNotFound",
    "BlobStore",
    "BlobWriter",
    "Catalog",
    "Conflict",
    "FileRecord",
    "FsckReport",
    "GcReport",
    "HubData",
    "InvalidIdentifier",
    "LocalBlobStore",
    "ModelRecord",
    "NewVersion",
    "NotFound",
    "PublishResult",
    "ServiceRecord",
    "StoreError",
    "VersionRecord",
    "collect_garbage",
    "copy_to_temp",
    "export_zip",
    "fsck",
    "ids",
    "ingest_bundle",
    "make_private_database",
    "make_private_dir",
    "open_data_dir",
    "pick_latest",
    "publish_file",
]
