import threading

import pytest

from hub_store import FileRecord, NewVersion, collect_garbage, open_data_dir


def version_of(i, digests):
    return NewVersion(
        service_id="svc", service_name="svc", service_type="python", port=None, description="",
        version=f"1.0.{i}", sha256=digests[0], size_bytes=1, manifest_sha256=digests[0],
        created_at="2025-12-17T00:00:00Z", stable=True, signature=None, signer=None,
        files=tuple(FileRecord(f"f{n}", 1, 0o644, d) for n, d in enumerate(digests)), models=())


def fake_publish(hub, i):
    """The publish protocol from hub_store.publish: lease, write blobs, insert rows + release."""
    lease = f"lease-{i}"
    payloads = [b"shared model bytes", f"code {i}".encode()]
    import hashlib
    hub.catalog.lease_many(lease, [hashlib.sha256(p).hexdigest() for p in payloads])
    digests = [hub.store.put_bytes(p).digest for p in payloads]
    hub.catalog.add_version(version_of(i, digests), lease_id=lease)


def test_unreferenced_blobs_are_collected_and_referenced_ones_kept(tmp_path):
    with open_data_dir(tmp_path) as hub:
        fake_publish(hub, 0)
        stray = hub.store.put_bytes(b"nobody wants me").digest
        (hub.store.tmp_dir / "upload-old").write_bytes(b"partial")
        report = collect_garbage(hub.store, hub.catalog, min_age_s=-60, temp_max_age_s=-60)
        assert report.deleted == 1 and report.temp_removed == 1
        assert not hub.store.exists(stray)
        assert all(hub.store.exists(d) for d in hub.catalog.referenced_digests())


def test_a_work_directory_left_by_a_crashed_zip_import_is_removed(tmp_path):
    with open_data_dir(tmp_path) as hub:
        work = hub.store.tmp_dir / "zip-import-abc"
        (work / "src" / "models").mkdir(parents=True)
        (work / "src" / "models" / "w.bin").write_bytes(b"w")
        report = collect_garbage(hub.store, hub.catalog, temp_max_age_s=-60)
        assert report.temp_removed == 1 and not work.exists()


def test_blobs_newer_than_the_gc_start_are_kept(tmp_path):
    with open_data_dir(tmp_path) as hub:
        fresh = hub.store.put_bytes(b"just written").digest
        report = collect_garbage(hub.store, hub.catalog, min_age_s=60)
        assert report.kept_recent == 1 and hub.store.exists(fresh)


def test_leased_blobs_are_kept(tmp_path):
    with open_data_dir(tmp_path) as hub:
        d = hub.store.put_bytes(b"upload in progress").digest
        hub.catalog.lease("L", d)
        report = collect_garbage(hub.store, hub.catalog, min_age_s=-60)
        assert report.kept_leased == 1 and hub.store.exists(d)


def test_gc_in_a_loop_during_publishes_never_loses_a_referenced_blob(tmp_path):
    # min_age_s < 0 turns off the "newer than GC start" guard: only the lease protocol protects.
    with open_data_dir(tmp_path) as hub:
        stop = threading.Event()
        errors = []

        def gc_loop():
            try:
                while not stop.is_set():
                    collect_garbage(hub.store, hub.catalog, min_age_s=-3600)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        gc = threading.Thread(target=gc_loop)
        gc.start()
        try:
            for i in range(60):
                fake_publish(hub, i)
                hub.store.put_bytes(f"stray {i}".encode())
        finally:
            stop.set()
            gc.join(timeout=60)
        assert not errors
        missing = [d for d in hub.catalog.referenced_digests() if not hub.store.exists(d)]
        assert missing == []


def test_a_blob_deleted_during_gc_is_skipped(tmp_path, monkeypatch):
    with open_data_dir(tmp_path) as hub:
        stray = hub.store.put_bytes(b"nobody wants me").digest
        stat = hub.store.stat

        def deleted_meanwhile(digest):
            hub.store.delete(digest)  # by another GC, between the scan and the decision
            return stat(digest)

        monkeypatch.setattr(hub.store, "stat", deleted_meanwhile)
        report = collect_garbage(hub.store, hub.catalog, min_age_s=-60)
        assert report.deleted == 0 and not hub.store.exists(stray)


def test_an_unreadable_blob_stops_gc(tmp_path, monkeypatch):
    with open_data_dir(tmp_path) as hub:
        stray = hub.store.put_bytes(b"nobody wants me").digest

        def unreadable(digest):
            raise PermissionError(13, "Permission denied", str(hub.store.path(digest)))

        monkeypatch.setattr(hub.store, "stat", unreadable)
        with pytest.raises(PermissionError):
            collect_garbage(hub.store, hub.catalog, min_age_s=-60)
        assert hub.store.exists(stray)
