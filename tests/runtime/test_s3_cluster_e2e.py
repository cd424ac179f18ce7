"""A plane whose hub blobs are in S3 (moto's server) deploys the echo worker on a real node.

The plane's data dir never holds a blob and its blob answers are 307s, so the node's
install came from the store's presigned URLs, not through the plane.
"""

from __future__ import annotations

import hashlib
from functools import partial

import httpx
import pytest
import trio

from runtime.hub import HubSettings
from runtime.node.agent import ExecutorSettings, NodeSettings, run_node
from runtime.plane import PlaneSettings, serve_control_plane
from tests.runtime.test_cluster_e2e import ADMIN, AUTH, echo_bundle, ready_versions, wait_for

pytestmark = pytest.mark.engines


async def test_a_node_installs_from_presigned_urls_and_runs_the_replica(tmp_path, s3_bucket):
    root = tmp_path / "plane"
    settings = PlaneSettings(data_dir=root, port=0, heartbeat_interval=0.2,
                             hub=HubSettings(data_dir=root, blobs=s3_bucket.url))
    bundle = echo_bundle(tmp_path, "1.0.0")
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))
            async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
                r = await client.put("/api/services/echo/1.0.0", headers=AUTH, content=bundle.path.read_bytes())
                assert r.status_code == 201, r.text
                _, token = handle.scheduler.store.create_token("node")
                node = NodeSettings(url=handle.url, token=token, data_dir=tmp_path / "node", name="node",
                                    executor=ExecutorSettings(grace_s=2))
                await nursery.start(partial(run_node, node))
                r = await client.post("/api/deployments", headers=AUTH,
                                      json={"service": "echo", "version": "1.0.0", "replicas": 1})
                assert r.status_code == 201, r.text
                await wait_for(client, lambda d: ready_versions(d) == ["1.0.0"])
                for entry in bundle.manifest.files:
                    answer = await client.get(f"/blobs/sha256:{entry.sha256}")
                    assert answer.status_code == 307 and answer.content == b""
            nursery.cancel_scope.cancel()
    local = root / "blobs" / "sha256"
    assert not [p for p in local.rglob("*") if p.is_file()]
    installed = tmp_path / "node" / "services" / "echo" / "1.0.0"
    for entry in bundle.manifest.files:
        assert hashlib.sha256((installed / entry.path).read_bytes()).hexdigest() == entry.sha256
