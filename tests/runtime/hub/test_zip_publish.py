"""PUT of a seed zip (service.json + files + checksum.sha256, as seed 001's upload tool sends it):
converted to a bundle after the hostile-archive checks, or refused with one line and a 4xx."""

from __future__ import annotations

import hashlib

import pytest
import trio

from tests.packer.seedzips import FILES, checksum_text, overlapping_zip, seed_zip, symlink_zip
from tests.runtime.hub.conftest import AUTH
from tests.runtime.hub.test_seed_checksum import seed_install

URL = "/api/services/nmt-m2m100/1.0.0"
ZIP = {**AUTH, "Content-Type": "application/zip"}


async def test_a_seed_zip_is_published_as_a_bundle_and_served_back(hub, tmp_path):
    with trio.fail_after(30):
        data = seed_zip()
        r = await hub.put(URL, content=data, headers=ZIP)
        assert r.status_code == 201, r.text
        assert r.json()["created"] is True and r.json()["service_id"] == "nmt-m2m100"
        version = (await hub.get(f"{URL}")).json()
        assert {f["path"]: f["sha256"] for f in version["files"]} == \
            {p: hashlib.sha256(d).hexdigest() for p, d in FILES.items()}
        detail = (await hub.get("/api/services/nmt-m2m100")).json()
        assert detail["port"] == 5008 and detail["versions"][0]["models"][0]["model_type"] == "nmt"
        await seed_install(hub, "nmt-m2m100", "1.0.0", tmp_path / "installed")
        assert (tmp_path / "installed" / "nmt_service.py").read_bytes() == FILES["nmt_service.py"]
        model = await hub.get("/storage/models/m2m100-en-zh/1.0.0/model.onnx")
        assert model.content == FILES["models/nmt/m2m100-en-zh/model.onnx"]
        # The same zip again: the same bundle, so nothing new; with no content type too.
        again = await hub.put(URL, content=data, headers=AUTH)
        assert again.status_code == 200 and again.json()["created"] is False
        # Announced by digest as well (flowctl's header): still the same bundle.
        announced = await hub.put(URL, content=data,
                                  headers={**ZIP, "X-Flowctl-Sha256": hashlib.sha256(data).hexdigest()})
        assert announced.status_code == 200 and announced.json()["created"] is False
        other = seed_zip({**FILES, "README.md": b"changed\n"})
        conflict = await hub.put(URL, content=other, headers=ZIP)
        assert conflict.status_code == 409 and "immutable" in conflict.json()["detail"]
        assert hub.state.data.store.tmp_dir.exists() and list(hub.state.data.store.tmp_dir.iterdir()) == []


async def test_the_hubs_own_zip_publishes_to_another_version_slot_only_if_it_matches(hub, tmp_path):
    with trio.fail_after(30):
        assert (await hub.put(URL, content=seed_zip(), headers=ZIP)).status_code == 201
        exported = (await hub.get("/storage/services/nmt-m2m100/1.0.0.zip")).content
        same = await hub.put(URL, content=exported, headers=ZIP)
        assert same.status_code == 200 and same.json()["created"] is False
        wrong = await hub.put("/api/services/nmt-m2m100/2.0.0", content=exported, headers=ZIP)
        assert wrong.status_code == 400 and "was sent to nmt-m2m100@2.0.0" in wrong.json()["detail"]


HOSTILE = {
    "zip slip": (seed_zip(extra=[(__import__("zipfile").ZipInfo("../../evil.py"), b"x")]), 400,
                 "'../../evil.py': is not a safe relative path"),
    "symlink": (symlink_zip(), 400, "'models/link': is a symbolic link"),
    "overlap": (overlapping_zip(), 400, "overlaps another member"),
    "bad checksum": (seed_zip(checksum=checksum_text({**FILES, "README.md": b"x"})), 400,
                     "'README.md': does not match checksum.sha256"),
    "bad service.json": (seed_zip(service={"startup_command": ""}), 400, "startup_command is empty"),
    "bomb": (seed_zip({**FILES, "z.bin": bytes(80 << 20)}, checksum=checksum_text({**FILES, "z.bin": bytes(80 << 20)})),
             413, "zip bomb"),
    "truncated zip": (seed_zip()[:300], 400, "not a readable zip archive"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_hostile_zips_are_refused_with_one_line_and_no_trace(hub, name):
    data, status, reason = HOSTILE[name]
    with trio.fail_after(30):
        r = await hub.put(URL, content=data, headers=ZIP)
        assert r.status_code == status, r.text
        detail = r.json()["detail"]
        assert detail.startswith("bad zip: ") and reason in detail and "\n" not in detail
        assert "zstd" not in detail
        assert (await hub.get("/api/services")).json() == []
        assert list(hub.state.data.store.tmp_dir.iterdir()) == []


async def test_neither_bundle_nor_zip_nor_multipart(hub):
    with trio.fail_after(30):
        r = await hub.put(URL, content=b"hello, not a package", headers=AUTH)
        assert r.status_code == 400
        assert r.json()["detail"].startswith("bad upload: the body is neither a flowctl bundle")
        form = await hub.put(URL, files={"file": ("x.zip", seed_zip(), "application/zip")}, headers=AUTH)
        assert form.status_code == 415 and "multipart" in form.json()["detail"]
        assert (await hub.put(URL, content=seed_zip(), headers={"Content-Type": "application/zip"})).status_code == 401


async def test_a_zip_whose_files_do_not_fit_on_the_disk_is_refused_before_extraction(tmp_path):
    import httpx

    from tests.runtime.hub.conftest import running_hub

    with trio.fail_after(30):
        data = seed_zip()
        # Room for the upload itself, not for the extracted files as well.
        async with running_hub(tmp_path / "hub", free_space=lambda _: len(data) + (256 << 20) + 10) as (url, state):
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                r = await client.put(URL, content=data, headers=ZIP)
                assert r.status_code == 507, r.text
                assert "not enough disk space for the files of the zip of nmt-m2m100@1.0.0" in r.json()["detail"]
                assert list(state.data.store.tmp_dir.iterdir()) == []
