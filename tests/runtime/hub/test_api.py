import hashlib

import trio

from tests.hub_store.bundles import make_bundle
from tests.runtime.hub.conftest import AUTH


async def publish(hub, packed, **params):
    data = packed.path.read_bytes()
    m = packed.manifest
    return await hub.put(f"/api/services/{m.service_id}/{m.version}", content=data, headers=AUTH,
                         params=params)


async def test_publish_then_every_read_endpoint(hub, tmp_path):
    with trio.fail_after(30):
        packed = make_bundle(tmp_path)
        r = await publish(hub, packed)
        assert r.status_code == 201, r.text
        assert r.json()["bundle_sha256"] == packed.sha256 and r.json()["created"] is True
        assert r.json()["bundle_size_bytes"] == packed.size

        services = (await hub.get("/api/services")).json()
        assert services[0]["service_id"] == "echo" and services[0]["latest_version"] == "1.0.0"
        assert services[0]["versions"][0]["bundle_size_bytes"] == packed.size
        detail = (await hub.get("/api/services/echo")).json()
        assert detail["port"] == 5008
        assert detail["versions"][0]["models"] == [{"model_id": "echo-model", "model_type": "chat",
                                                    "version": "1.0.0"}]
        checksum = (await hub.get("/api/services/echo/latest/checksum")).json()
        zip_bytes = (await hub.get("/storage/services/echo/1.0.0.zip")).content
        assert checksum == {"service_id": "echo", "version": "1.0.0",
                            "sha256": hashlib.sha256(zip_bytes).hexdigest(), "size_bytes": len(zip_bytes),
                            "url": "/storage/services/echo/1.0.0.zip",
                            "bundle_sha256": packed.sha256, "bundle_size_bytes": packed.size}

        manifest = await hub.get("/api/services/echo/latest/manifest")
        assert manifest.content == packed.manifest.canonical_bytes()
        assert manifest.headers["content-type"].startswith("application/json")
        assert manifest.headers["etag"] == f'"{hashlib.sha256(manifest.content).hexdigest()}"'
        assert manifest.headers["x-flowctl-version"] == "1.0.0"
        assert (await hub.get("/api/services/echo/1.0.0/signature")).status_code == 404

        bundle = await hub.get("/storage/services/echo/latest.fbundle")
        assert bundle.content == packed.path.read_bytes()
        assert bundle.headers["x-flowctl-version"] == "1.0.0"
        zipped = await hub.get("/storage/services/echo/1.0.0.zip")
        assert zipped.status_code == 200 and zipped.content[:2] == b"PK"
        assert 'filename="echo-1.0.0.zip"' in zipped.headers["content-disposition"]

        for f in packed.manifest.files:
            blob = await hub.get(f"/blobs/sha256:{f.sha256}")
            assert hashlib.sha256(blob.content).hexdigest() == f.sha256
            assert blob.headers["etag"] == f'"{f.sha256}"'
            assert blob.headers["content-type"] == "application/octet-stream"

        models = (await hub.get("/api/models")).json()
        assert models[0]["model_id"] == "echo-model" and models[0]["latest_version"] == "1.0.0"
        model = (await hub.get("/api/models/echo-model")).json()
        files = {f["path"]: f for f in model["versions"][0]["files"]}
        assert set(files) == {"weights.bin", "config.json"}
        weights = await hub.get(files["weights.bin"]["url"])
        assert weights.content == b"W" * 5000
        ranked = (await hub.get("/api/model-usage/ranking")).json()
        assert ranked[0]["model_id"] == "echo-model" and ranked[0]["downloads"] >= 3
        assert (await hub.get("/health")).json()["status"] == "ok"
        assert (await hub.get("/openapi.json")).json()["openapi"].startswith("3.")
        assert "flowctl hub API" in (await hub.get("/docs")).text


async def test_range_head_and_conditional_on_blobs(hub, tmp_path):
    with trio.fail_after(30):
        packed = make_bundle(tmp_path)
        await publish(hub, packed)
        url = f"/blobs/sha256:{packed.sha256}"
        full = packed.path.read_bytes()
        head = await hub.head(url)
        assert head.status_code == 200 and head.headers["content-length"] == str(len(full))
        assert head.headers["accept-ranges"] == "bytes" and head.content == b""
        part = await hub.get(url, headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == full[10:20]
        assert part.headers["content-range"] == f"bytes 10-19/{len(full)}"
        suffix = await hub.get(url, headers={"Range": "bytes=-7"})
        assert suffix.status_code == 206 and suffix.content == full[-7:]
        assert (await hub.get(url, headers={"Range": f"bytes={len(full)}-"})).status_code == 416
        etag = head.headers["etag"]
        assert (await hub.get(url, headers={"If-None-Match": etag})).status_code == 304
        stale = await hub.get(url, headers={"Range": "bytes=0-3", "If-Range": '"other"'})
        assert stale.status_code == 200 and stale.content == full


async def test_republish_idempotent_conflict_and_auth(hub, tmp_path):
    with trio.fail_after(30):
        packed = make_bundle(tmp_path)
        assert (await hub.put("/api/services/echo/1.0.0", content=packed.path.read_bytes())).status_code == 401
        bad = {"Authorization": "Bearer wrong"}
        assert (await hub.put("/api/services/echo/1.0.0", content=b"x", headers=bad)).status_code == 401
        assert (await publish(hub, packed)).status_code == 201
        again = await publish(hub, packed)
        assert again.status_code == 200 and again.json()["created"] is False
        other = make_bundle(tmp_path / "o", files={"worker.py": b"other\n"})
        conflict = await publish(hub, other)
        assert conflict.status_code == 409 and "immutable" in conflict.json()["detail"]
        wrong_target = await hub.put("/api/services/echo/2.0.0", content=packed.path.read_bytes(),
                                     headers=AUTH)
        assert wrong_target.status_code == 400
        mismatch = await hub.put("/api/services/echo/1.0.1", content=packed.path.read_bytes(),
                                 headers={**AUTH, "X-Flowctl-Sha256": "0" * 64})
        assert mismatch.status_code == 400
        garbage = await hub.put("/api/services/echo/3.0.0", content=b"not a bundle", headers=AUTH)
        assert garbage.status_code == 400 and "bad upload: the body is neither" in garbage.json()["detail"]
        empty = await hub.put("/api/services/echo/3.0.0", content=b"", headers=AUTH)
        assert empty.status_code == 400 and empty.json()["detail"] == "bad upload: the body is empty"


async def test_stable_and_yank_drive_latest(hub, tmp_path):
    with trio.fail_after(30):
        await publish(hub, make_bundle(tmp_path, "1.0.0"))
        await publish(hub, make_bundle(tmp_path / "b", "1.1.0"))
        assert (await hub.get("/api/services/echo/latest/checksum")).json()["version"] == "1.1.0"
        assert (await hub.post("/api/services/echo/1.1.0/yank")).status_code == 401
        r = await hub.post("/api/services/echo/1.1.0/yank", headers=AUTH)
        assert r.status_code == 200 and r.json()["yanked"] is True
        latest = await hub.get("/api/services/echo/latest/manifest")
        assert latest.headers["x-flowctl-version"] == "1.0.0"
        await hub.post("/api/services/echo/1.0.0/unstable", headers=AUTH)
        assert (await hub.get("/api/services/echo/latest/checksum")).status_code == 404
        await hub.post("/api/services/echo/1.1.0/unyank", headers=AUTH)
        assert (await hub.get("/api/services/echo/latest/checksum")).json()["version"] == "1.1.0"
        assert (await hub.post("/api/services/echo/1.1.0/explode", headers=AUTH)).status_code == 404


async def test_signature_endpoint_returns_raw_sig(hub, tmp_path):
    from packer import generate_keypair

    with trio.fail_after(30):
        private, _ = generate_keypair(tmp_path / "k")
        packed = make_bundle(tmp_path, signing_key=private)
        await publish(hub, packed)
        sig = await hub.get("/api/services/echo/latest/signature")
        assert sig.status_code == 200 and len(sig.content) > 0
        detail = (await hub.get("/api/services/echo/1.0.0")).json()
        assert detail["signed"] is True and len(detail["files"]) == 3


async def test_gc_and_fsck_over_http(hub, tmp_path):
    with trio.fail_after(30):
        await publish(hub, make_bundle(tmp_path))
        stray = hub.state.data.store.put_bytes(b"stray").digest
        assert (await hub.post("/api/admin/gc")).status_code == 401
        # The stray is newer than this GC's start minus 0 s only if written in the same instant;
        # fsck sees it as unreferenced either way.
        report = (await hub.post("/api/admin/fsck", headers=AUTH)).json()
        assert report["ok"] is True and report["unreferenced"] == 1
        gc = (await hub.post("/api/admin/gc", headers=AUTH)).json()
        assert gc["deleted"] + gc["kept_recent"] == 1
        assert hub.state.data.store.exists(stray) == (gc["kept_recent"] == 1)


async def test_private_hub_needs_the_key_to_read(tmp_path):
    import httpx

    from tests.runtime.hub.conftest import running_hub

    with trio.fail_after(30):
        async with running_hub(tmp_path / "hub", private=True) as (url, _state):
            async with httpx.AsyncClient(base_url=url) as client:
                assert (await client.get("/health")).status_code == 200
                assert (await client.get("/api/services")).status_code == 401
                assert (await client.get("/api/services", headers=AUTH)).json() == []


async def test_openapi_describes_every_seed_path(hub):
    with trio.fail_after(30):
        paths = (await hub.get("/openapi.json")).json()["paths"]
        for seed_path in ["/api/models", "/api/models/{model_id}", "/storage/models/{model_id}/{version}/{file_path}",
                          "/api/model-usage/ranking", "/api/services", "/api/services/{service_id}",
                          "/storage/services/{service_id}/{version}.zip",
                          "/api/services/{service_id}/{version}/checksum",
                          "/api/services/{service_id}/{version}/manifest", "/blobs/sha256:{digest}"]:
            assert seed_path in paths


async def test_publish_size_cap(tmp_path):
    import httpx

    from tests.runtime.hub.conftest import running_hub

    with trio.fail_after(30):
        packed = make_bundle(tmp_path)
        async with running_hub(tmp_path / "hub", max_publish_bytes=100) as (url, state):
            async with httpx.AsyncClient(base_url=url) as client:
                r = await client.put("/api/services/echo/1.0.0", content=packed.path.read_bytes(), headers=AUTH)
                assert r.status_code == 413
                assert state.data.catalog.services() == [] and list(state.data.store.iter_temp()) == []


async def test_concurrent_first_zip_requests_build_it_once(hub, tmp_path):
    with trio.fail_after(30):
        packed = make_bundle(tmp_path)
        await publish(hub, packed)
        bodies = []

        async def fetch():
            bodies.append((await hub.get("/storage/services/echo/1.0.0.zip")).content)

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(fetch)
        assert len(set(bodies)) == 1 and bodies[0][:2] == b"PK"
        report = (await hub.post("/api/admin/fsck", headers=AUTH)).json()
        assert report["unreferenced"] == 0


async def test_small_blob_fast_path_matches_the_quart_path(hub, tmp_path):
    """Small blobs bypass quart; headers and statuses must be those of serve_bytes."""
    from runtime.http import serve_bytes

    with trio.fail_after(30):
        data = b"0123456789" * 50
        digest = hub.state.data.store.put_bytes(data).digest
        url = f"/blobs/sha256:{digest}"
        cases = [{}, {"Range": "bytes=5-9"}, {"Range": "bytes=-3"}, {"Range": "bytes=900-"},
                 {"If-None-Match": f'"{digest}"'}, {"If-Match": '"nope"'},
                 {"Range": "bytes=0-1", "If-Range": '"other"'},
                 {"Range": f"bytes={'9' * 5000}-"}, {"Range": f"bytes=0-{'9' * 5000}"},  # past int()'s limit
                 {"Range": "bytes=0-1", "If-Range": "Sun, 06 Nov 1994 08:49:37 +99999999999999999999"}]
        for headers in cases:
            r = await hub.get(url, headers=headers)
            expected = await serve_bytes(data, etag=digest, request_headers=headers, method="GET",
                                         cache_control="public, max-age=31536000, immutable")
            assert r.status_code == expected.status_code, headers
            assert r.content == await expected.get_data(), headers
            for name in ("etag", "content-range", "accept-ranges", "content-type", "cache-control"):
                assert r.headers.get(name) == expected.headers.get(name), (headers, name)
        head = await hub.head(url)
        assert head.status_code == 200 and head.headers["content-length"] == "500" and head.content == b""


async def test_every_seed_download_path_takes_ranges(hub, tmp_path):
    with trio.fail_after(30):
        packed = make_bundle(tmp_path)
        await publish(hub, packed)
        for path in ["/storage/services/echo/latest.zip", "/storage/services/echo/1.0.0.fbundle",
                     "/storage/models/echo-model/latest/weights.bin",
                     "/storage/models/echo-model/1.0.0/config.json",
                     "/api/services/echo/latest/manifest"]:
            full = await hub.get(path)
            assert full.status_code == 200, path
            part = await hub.get(path, headers={"Range": "bytes=-5"})
            assert part.status_code == 206 and part.content == full.content[-5:], path
            head = await hub.head(path)
            assert head.headers["content-length"] == str(len(full.content)), path
            assert (await hub.get(path, headers={"If-None-Match": full.headers["etag"]})).status_code == 304
