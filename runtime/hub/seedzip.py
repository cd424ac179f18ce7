"""The seed's .zip of a version: built once from the bundle, kept as a blob, its digest in the catalog.

Seed 001's clients download `/storage/services/{id}/{version}.zip` and check it against
the `sha256`/`size_bytes` of the list, the detail and `/checksum`, so those fields describe
this zip, and the bundle's own digest travels as `bundle_sha256`/`bundle_size_bytes`. The zip
is deterministic (packer/zipexport.py) and stored once, so its digest is the same on every
request and across restarts.
"""

from __future__ import annotations

from dataclasses import replace

from hub_store import VersionRecord, export_zip
from runtime.hub.state import HubState


async def with_zip(state: HubState, record: VersionRecord) -> VersionRecord:
    """`record` with its zip's digest and size, building the zip first if it was never built."""
    if record.zip_sha256 is not None and record.zip_size is not None:
        return record
    return await ensure_zip(state, record)


async def ensure_zip(state: HubState, record: VersionRecord) -> VersionRecord:
    """Build (or find) the zip of `record`; concurrent callers for one version build it once.

    Unlike `with_zip`, this also rebuilds a zip whose blob went missing from the store.
    """
    catalog, store = state.data.catalog, state.data.blobs
    async with state.zip_lock(record.service_id, record.version):
        fresh = await state.run(catalog.get_version, record.service_id, record.version)
        digest, size = await state.run(export_zip, store, catalog, fresh)
    return replace(fresh, zip_sha256=digest, zip_size=size)
