"""The hub's composition root: open the data dir, settle the admin key, serve the app."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from runtime.api import ensure_admin_key
from runtime.http import serve_app
from runtime.hub.app import create_hub_app
from runtime.hub.blobstore import open_hub_data
from runtime.hub.sendfile import blob_router
from runtime.hub.state import HubSettings, HubState

log = logging.getLogger("flowctl.hub")


async def serve_hub(settings: HubSettings, *, admin_key: str | None = None,
                    on_new_key: Callable[[str], Any] | None = None,
                    wrap_app: Callable[[Any], None] | None = None,
                    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve a hub from `settings.data_dir` until cancelled; `task_status.started(urls)` when bound.

    `admin_key` (FLOWCTL_ADMIN_KEY) replaces the stored key; without one, a key is
    generated on first start and handed to `on_new_key` once (the CLI prints it).
    `wrap_app` may put ASGI layers in front of the app before it serves (the CLI's /docs).

    Cancellation: stops accepting, drains requests in flight, closes the catalog.
    """
    data = await trio.to_thread.run_sync(open_hub_data, settings.data_dir, settings.blobs)
    try:
        key_hash, new_key = await trio.to_thread.run_sync(ensure_admin_key, data.root, admin_key)
        if new_key is not None and on_new_key is not None:
            on_new_key(new_key)
        await trio.to_thread.run_sync(data.catalog.purge_expired_leases)
        state = HubState(data, settings, key_hash, limiter=trio.CapacityLimiter(settings.threads))
        app = create_hub_app(state)
        if wrap_app is not None:
            wrap_app(app)
        # Large verified blobs go out with os.sendfile (runtime/hub/sendfile.py); blobs in S3
        # are redirects the app answers.
        await serve_app(app, host=settings.host, port=settings.port, task_status=task_status,
                        file_router=blob_router(state) if data.remote is None else None)
    finally:
        data.close()
