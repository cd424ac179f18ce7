import os
import sqlite3

import pytest

from hub_store import BadBundle, BlobDigestMismatch, Conflict, fsck, open_data_dir, publish_file
from packer import BundleError, DigestMismatch, PackerError, SignatureError
from tests.hub_store.bundles import make_bundle


@pytest.fixture
def hub(tmp_path):
    with open_data_dir(tmp_path / "hub") as data:
        yield data


def test_publish_stores_bundle_files_and_manifest_as_blobs(hub, tmp_path):
    packed = make_bundle(tmp_path)
    result = publish_file(hub.store, hub.catalog, packed.path)
    assert result.created and result.record.sha256 == packed.sha256
    assert result.record.stable and not result.record.yanked
    assert hub.store.exists(packed.sha256)
    assert hub.store.read_bytes(result.record.manifest_sha256) == packed.manifest.canonical_bytes()
    for f in packed.manifest.files:
        assert hub.store.stat(f.sha256).size == f.size
    assert [f.path for f in hub.catalog.files("echo", "1.0.0")] == [f.path for f in packed.manifest.files]
    assert [m.model_id for m in hub.catalog.models_of("echo", "1.0.0")] == ["echo-model"]
    assert list(hub.store.iter_temp()) == []
    assert fsck(hub.store, hub.catalog).ok


def test_republish_identical_is_idempotent_and_other_bytes_conflict(hub, tmp_path):
    packed = make_bundle(tmp_path)
    publish_file(hub.store, hub.catalog, packed.path)
    again = publish_file(hub.store, hub.catalog, packed.path)
    assert not again.created
    other = make_bundle(tmp_path / "other", files={"worker.py": b"different\n"})
    with pytest.raises(Conflict):
        publish_file(hub.store, hub.catalog, other.path)
    assert list(hub.store.iter_temp()) == []



def _lose_the_race_to(hub, monkeypatch, bundle):
    """Another publish of `bundle` lands between this publish's existence check and its insert."""
    find_version = hub.catalog.find_version

    def racing(service_id, version):
        monkeypatch.setattr(hub.catalog, "find_version", find_version)
        publish_file(hub.store, hub.catalog, bundle.path)
        return None

    monkeypatch.setattr(hub.catalog, "find_version", racing)


def test_a_concurrent_publish_of_the_same_version_with_other_bytes_is_a_conflict(hub, tmp_path, monkeypatch):
    packed = make_bundle(tmp_path)
    _lose_the_race_to(hub, monkeypatch, make_bundle(tmp_path / "other", files={"worker.py": b"different\n"}))
    with pytest.raises(Conflict):
        publish_file(hub.store, hub.catalog, packed.path)
    assert hub.catalog.get_version("echo", "1.0.0").sha256 != packed.sha256
    assert list(hub.store.iter_temp()) == [] and hub.catalog.live_leases() == set()


def test_a_concurrent_publish_of_the_same_bytes_is_idempotent(hub, tmp_path, monkeypatch):
    packed = make_bundle(tmp_path)
    _lose_the_race_to(hub, monkeypatch, packed)
    result = publish_file(hub.store, hub.catalog, packed.path)
    assert not result.created and result.record.sha256 == packed.sha256


def test_an_unrelated_catalog_error_is_not_taken_for_a_race(hub, tmp_path, monkeypatch):
    def broken(new, *, lease_id=None):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(hub.catalog, "add_version", broken)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        publish_file(hub.store, hub.catalog, make_bundle(tmp_path).path)
    assert hub.catalog.find_version("echo", "1.0.0") is None

def test_second_version_stores_only_new_blobs(hub, tmp_path):
    publish_file(hub.store, hub.catalog, make_bundle(tmp_path).path)
    files = {"worker.py": b"print('v2')\n", "models/echo-model/weights.bin": b"W" * 5000,
             "models/echo-model/config.json": b'{"dim": 4}\n'}
    result = publish_file(hub.store, hub.catalog, make_bundle(tmp_path, "1.1.0", files=files).path)
    assert result.new_blobs == 1 and result.new_bytes == len(b"print('v2')\n")
    assert hub.catalog.resolve("echo", "latest").version == "1.1.0"


def test_prerelease_is_not_stable_by_default(hub, tmp_path):
    publish_file(hub.store, hub.catalog, make_bundle(tmp_path, "2.0.0-rc.1").path)
    assert not hub.catalog.get_version("echo", "2.0.0-rc.1").stable


def test_truncated_bundle_leaves_no_trace(hub, tmp_path):
    packed = make_bundle(tmp_path)
    cut = tmp_path / "cut.fbundle"
    cut.write_bytes(packed.path.read_bytes()[: packed.size // 2])
    with pytest.raises(PackerError):
        publish_file(hub.store, hub.catalog, cut)
    assert hub.catalog.services() == [] and hub.catalog.live_leases() == set()
    assert list(hub.store.iter_temp()) == []
    assert hub.catalog.referenced_digests() == set()


def test_corrupted_bundle_is_rejected(hub, tmp_path):
    packed = make_bundle(tmp_path, files={"big.bin": os.urandom(200_000)})
    data = bytearray(packed.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.fbundle"
    bad.write_bytes(bytes(data))
    with pytest.raises((PackerError, DigestMismatch, BundleError)):
        publish_file(hub.store, hub.catalog, bad)
    assert hub.catalog.services() == []


def test_expected_digest_and_target_are_checked(hub, tmp_path):
    packed = make_bundle(tmp_path)
    with pytest.raises(BlobDigestMismatch):
        publish_file(hub.store, hub.catalog, packed.path, expected_sha256="0" * 64)
    with pytest.raises(BadBundle):
        publish_file(hub.store, hub.catalog, packed.path, expect_id=("echo", "9.9.9"))
    assert hub.catalog.services() == []


def test_signatures_checked_against_trusted_keys(hub, tmp_path):
    from packer import generate_keypair, load_public_key

    private, public = generate_keypair(tmp_path / "key")
    other_private, other_public = generate_keypair(tmp_path / "other")
    signed = make_bundle(tmp_path, signing_key=private)
    with pytest.raises(SignatureError):
        publish_file(hub.store, hub.catalog, signed.path, trusted_keys=(load_public_key(other_public),))
    result = publish_file(hub.store, hub.catalog, signed.path, trusted_keys=(load_public_key(public),))
    assert result.record.signed and result.record.signer
    unsigned = make_bundle(tmp_path / "u", "1.0.1")
    with pytest.raises(SignatureError):
        publish_file(hub.store, hub.catalog, unsigned.path, require_signature=True)
