"""A scheduler behind real node WebSockets on 127.0.0.1, and a stand-in worker (test_cluster.py)."""

import pytest

from runtime.scheduler.store import ClusterStore
from tests.runtime.scheduler.test_cluster import serve_plane, serve_worker


@pytest.fixture
async def worker(nursery):
    return await serve_worker(nursery)


@pytest.fixture
async def plane(nursery, tmp_path):
    store = ClusterStore(tmp_path / "cluster.db")
    yield await serve_plane(nursery, store)
    store.close()
