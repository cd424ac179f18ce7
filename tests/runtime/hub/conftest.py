"""A real hub on 127.0.0.1:0 over a temp data dir, and an httpx client for it."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import replace

import httpx
import pytest
import trio

from hub_store import open_data_dir
from runtime.api import hash_key
from runtime.http import open_test_server
from runtime.hub import HubSettings, HubState, create_hub_app

ADMIN_KEY = "test-admin-key"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


@asynccontextmanager
async def running_hub(data_dir, **settings):
    data = open_data_dir(data_dir)
    try:
        state = HubState(data, replace(HubSettings(data_dir=data_dir), **settings), hash_key(ADMIN_KEY),
                         limiter=trio.CapacityLimiter(8))
        async with open_test_server(create_hub_app(state)) as url:
            yield url, state
    finally:
        data.close()


@pytest.fixture
async def hub(tmp_path):
    async with running_hub(tmp_path / "hub") as (url, state):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            client.state = state
            client.url = url
            yield client
