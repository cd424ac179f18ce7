"""A seed zip sent to the publish route becomes a bundle first (seed 001's upload tool sends zips).

The conversion (`packer.bundle_from_zip`) runs the hostile-archive checks, then packs the
zip's files into a bundle in the store's tmp/, which the usual ingest then takes over. A zip
that is refused answers with one line naming the member and the reason: 413 for a size limit,
400 otherwise; 507 when its files would not fit on the disk.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hub_store import InsufficientStorage, LocalBlobStore, SpaceGuard, is_disk_full
from packer import LimitExceeded, PackerError
from runtime.api import ApiError


def convert_zip(store: LocalBlobStore, zip_path: Path, space: SpaceGuard, what: str) -> tuple[Path, str, int]:
    """Pack the seed zip at `zip_path` into a bundle in tmp/; (its temp path, sha256, size).

    Runs in a worker thread. The work directory is removed whatever happens.
    """
    from packer import bundle_from_zip

    work = Path(tempfile.mkdtemp(dir=store.tmp_dir, prefix="zip-import-"))
    try:
        # The files are written once extracted and once more packed (compressed, so at most as large).
        result = bundle_from_zip(zip_path, work, reserve=lambda n: space.require(2 * n, f"the files of {what}"))
        temp = store.temp_file("zip-bundle-")
        os.replace(result.path, temp)
        return temp, result.sha256, result.size
    except LimitExceeded as exc:
        raise ApiError(413, f"bad zip: {exc}") from None
    except PackerError as exc:
        raise ApiError(400, f"bad zip: {exc}") from None
    except OSError as exc:
        if is_disk_full(exc):
            raise InsufficientStorage(what) from exc
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
