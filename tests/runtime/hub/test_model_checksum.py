"""Seed 001's model API: `GET /storage/models/{model_id}/{version}/checksum.sha256`."""

from __future__ import annotations

import hashlib

import trio

from tests.hub_store.bundles import make_bundle
from tests.runtime.hub.conftest import AUTH


async def publish(hub, packed):
    m = packed.manifest
    r = await hub.put(f"/api/services/{m.service_id}/{m.version}", content=packed.path.read_bytes(), headers=AUTH)
    assert r.status_code == 201, r.text


async def test_checksum_lists_every_model_file_and_each_download_matches(hub, tmp_path):
    with trio.fail_after(30):
        await publish(hub, make_bundle(tmp_path))
        r = await hub.get("/storage/models/echo-model/1.0.0/checksum.sha256")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert r.headers["etag"] == f'"{hashlib.sha256(r.content).hexdigest()}"'
        lines = r.text.splitlines()
        assert len(lines) == 2
        # sha256sum's format, checked the way a seed node would: fetch each file, compare.
        for line in lines:
            digest, path = line.split("  ", 1)
            body = (await hub.get(f"/storage/models/echo-model/1.0.0/{path}")).content
            assert hashlib.sha256(body).hexdigest() == digest
        assert {line.split("  ")[1] for line in lines} == {"weights.bin", "config.json"}
        latest = await hub.get("/storage/models/echo-model/latest/checksum.sha256")
        assert latest.content == r.content and latest.headers["cache-control"] == "no-cache"
        head = await hub.head("/storage/models/echo-model/1.0.0/checksum.sha256")
        assert head.status_code == 200 and head.headers["content-length"] == str(len(r.content))
        detail = (await hub.get("/api/models/echo-model")).json()
        assert detail["versions"][0]["checksum_url"] == "/storage/models/echo-model/1.0.0/checksum.sha256"


async def test_checksum_of_a_single_file_model_and_unknown_ones(hub, tmp_path):
    with trio.fail_after(30):
        files = {"worker.py": b"print(1)\n", "models/tiny.gguf": b"G" * 100}
        models = [{"model_id": "tiny", "model_type": "chat", "version": "2.0.0", "path": "models/tiny.gguf"}]
        await publish(hub, make_bundle(tmp_path, files=files, models=models))
        r = await hub.get("/storage/models/tiny/2.0.0/checksum.sha256")
        assert r.text == f"{hashlib.sha256(b'G' * 100).hexdigest()}  tiny.gguf\n"
        assert (await hub.get("/storage/models/tiny/9.9.9/checksum.sha256")).status_code == 404
        assert (await hub.get("/storage/models/nope/2.0.0/checksum.sha256")).status_code == 404
        assert (await hub.get("/storage/models/tiny/2.0.0/other.sha256")).status_code == 404


async def test_a_real_file_named_checksum_sha256_is_served_as_it_is(hub, tmp_path):
    with trio.fail_after(30):
        own = b"author's own checksum file\n"
        files = {"worker.py": b"print(1)\n", "models/m/w.bin": b"w", "models/m/checksum.sha256": own}
        models = [{"model_id": "m", "model_type": "chat", "version": "1.0.0", "path": "models/m"}]
        await publish(hub, make_bundle(tmp_path, files=files, models=models))
        assert (await hub.get("/storage/models/m/1.0.0/checksum.sha256")).content == own
