import stat

import pytest

from packer import PackerError, pack_dir, unpack_bundle


def test_round_trip_restores_bytes_and_modes(source, tmp_path):
    result = pack_dir(source, tmp_path / "d")
    dest = tmp_path / "out" / "echo"
    manifest = unpack_bundle(result.path, dest)
    assert manifest == result.manifest
    for entry in manifest.files:
        path = dest / entry.path
        assert path.read_bytes() == (source / entry.path).read_bytes()
        assert stat.S_IMODE(path.stat().st_mode) == entry.mode
    assert sorted(p.name for p in dest.parent.iterdir()) == ["echo"]


def test_empty_existing_dest_is_fine_non_empty_is_refused(source, tmp_path):
    result = pack_dir(source, tmp_path / "d")
    dest = tmp_path / "empty"
    dest.mkdir()
    unpack_bundle(result.path, dest)
    assert (dest / "worker.py").exists()
    with pytest.raises(PackerError, match="not an empty directory"):
        unpack_bundle(result.path, dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "empty", "src"]


def test_progress_counts_file_bytes(source, tmp_path):
    result = pack_dir(source, tmp_path / "d")
    seen = []
    unpack_bundle(result.path, tmp_path / "out", progress=seen.append)
    assert sum(seen) == result.manifest.total_size
