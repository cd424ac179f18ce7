import hashlib
import zipfile

from packer import pack_dir, write_zip


def test_seed_zip_holds_manifest_files_and_checksums(source, tmp_path):
    result = pack_dir(source, tmp_path / "d", fmt="zip")
    assert result.zip_path == tmp_path / "d" / "echo-1.0.0.zip"
    with zipfile.ZipFile(result.zip_path) as zf:
        names = zf.namelist()
        assert names[0] == "service.json" and names[-1] == "checksum.sha256"
        assert zf.read("service.json") == result.manifest.canonical_bytes()
        lines = zf.read("checksum.sha256").decode().splitlines()
        for line in lines:
            digest, name = line.split("  ")
            assert hashlib.sha256(zf.read(name)).hexdigest() == digest
        assert len(lines) == len(result.manifest.files) + 1
        assert (zf.getinfo("run.sh").external_attr >> 16) & 0o777 == 0o755


def test_zip_is_deterministic(source, tmp_path):
    result = pack_dir(source, tmp_path / "d")
    write_zip(result.path, tmp_path / "a.zip")
    write_zip(result.path, tmp_path / "b.zip")
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
