"""Seed 001's client, written as the seed describes it: download the .zip, check it, extract it.

The seed's ServicePackageManager reads `sha256`/`size_bytes` from
`/api/services/{id}/{version}/checksum` (or the list and detail), downloads
`/storage/services/{id}/{version}.zip` and verifies the SHA-256 "after download, before
extraction". These tests run that check literally against a real hub.
"""

from __future__ import annotations

import hashlib
import io
import zipfile

import httpx
import trio

from hub_store import open_data_dir, publish_file
from tests.hub_store.bundles import make_bundle
from tests.runtime.hub.conftest import AUTH, running_hub


class ChecksumMismatch(Exception):
    pass


async def seed_install(client: httpx.AsyncClient, service_id: str, version: str, dest) -> dict:
    """What the seed's node does: checksum, download, verify SHA-256 and size, then extract."""
    info = (await client.get(f"/api/services/{service_id}/{version}/checksum")).json()
    response = await client.get(f"/storage/services/{service_id}/{version}.zip")
    assert response.status_code == 200
    data = response.content
    if hashlib.sha256(data).hexdigest() != info["sha256"] or len(data) != info["size_bytes"]:
        raise ChecksumMismatch(f"{service_id}-{version}.zip does not match its checksum")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(dest)
    return info


async def publish(client: httpx.AsyncClient, packed) -> httpx.Response:
    m = packed.manifest
    return await client.put(f"/api/services/{m.service_id}/{m.version}", content=packed.path.read_bytes(),
                            headers=AUTH)


async def test_seed_client_accepts_the_zip_it_downloads(hub, tmp_path):
    with trio.fail_after(30):
        packed = make_bundle(tmp_path)
        published = (await publish(hub, packed)).json()
        info = await seed_install(hub, "echo", "1.0.0", tmp_path / "installed")
        assert (tmp_path / "installed" / "models/echo-model/weights.bin").read_bytes() == b"W" * 5000
        assert (tmp_path / "installed" / "service.json").is_file()
        # The publish answer, the list, the detail and the version already carry the zip's digest.
        assert published["sha256"] == info["sha256"] and published["size_bytes"] == info["size_bytes"]
        listed = (await hub.get("/api/services")).json()[0]["versions"][0]
        detail = (await hub.get("/api/services/echo")).json()["versions"][0]
        version = (await hub.get("/api/services/echo/1.0.0")).json()
        for body in (listed, detail, version):
            assert (body["sha256"], body["size_bytes"]) == (info["sha256"], info["size_bytes"])
            assert (body["bundle_sha256"], body["bundle_size_bytes"]) == (packed.sha256, packed.size)
        # The bundle's own digest still describes the .fbundle download.
        bundle = await hub.get("/storage/services/echo/1.0.0.fbundle")
        assert hashlib.sha256(bundle.content).hexdigest() == info["bundle_sha256"]
        latest = await seed_install(hub, "echo", "latest", tmp_path / "latest")
        assert latest["sha256"] == info["sha256"]


async def test_zip_digest_is_stable_across_requests_restarts_and_resumes(tmp_path):
    with trio.fail_after(60):
        packed = make_bundle(tmp_path)
        async with running_hub(tmp_path / "hub") as (url, _):
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                await publish(client, packed)
                first = (await client.get("/api/services/echo/1.0.0/checksum")).json()
                again = (await client.get("/api/services/echo/1.0.0/checksum")).json()
                assert first == again
        async with running_hub(tmp_path / "hub") as (url, _):
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                after_restart = (await client.get("/api/services/echo/1.0.0/checksum")).json()
                assert after_restart == first
                # A resumed download (Range) assembles the same bytes the checksum names.
                half = first["size_bytes"] // 2
                head = await client.get("/storage/services/echo/1.0.0.zip", headers={"Range": f"bytes=0-{half - 1}"})
                tail = await client.get("/storage/services/echo/1.0.0.zip",
                                        headers={"Range": f"bytes={half}-", "If-Range": head.headers["etag"]})
                assert head.status_code == tail.status_code == 206
                assert hashlib.sha256(head.content + tail.content).hexdigest() == first["sha256"]
                await seed_install(client, "echo", "1.0.0", tmp_path / "installed")


async def test_versions_published_before_the_zip_existed_get_one_on_first_read(tmp_path):
    with trio.fail_after(60):
        packed = make_bundle(tmp_path)
        data = open_data_dir(tmp_path / "hub")
        try:
            # Straight into the store, as an older hub did: no zip was built at publish time.
            assert publish_file(data.store, data.catalog, packed.path).record.zip_sha256 is None
        finally:
            data.close()
        async with running_hub(tmp_path / "hub") as (url, _):
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                listed = (await client.get("/api/services")).json()[0]["versions"][0]
                info = await seed_install(client, "echo", "1.0.0", tmp_path / "installed")
                assert listed["sha256"] == info["sha256"] and listed["bundle_sha256"] == packed.sha256


async def test_a_lost_zip_blob_is_rebuilt_with_the_same_digest(hub, tmp_path):
    with trio.fail_after(30):
        packed = make_bundle(tmp_path)
        await publish(hub, packed)
        info = (await hub.get("/api/services/echo/1.0.0/checksum")).json()
        store = hub.state.data.store
        store.path(info["sha256"]).unlink()
        hub.state.verifier.forget(info["sha256"])
        await seed_install(hub, "echo", "1.0.0", tmp_path / "installed")
        assert (await hub.get("/api/services/echo/1.0.0/checksum")).json() == info
