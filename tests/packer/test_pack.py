import hashlib
import io
import json
import os
import tarfile

import pytest
import zstandard

from packer import ManifestError, PackerError, SourceError, open_bundle, pack_dir, verify_bundle
from packer.pack import SMALL_FILE
from tests.packer.conftest import write_source


def _members(path):
    with open(path, "rb") as f:
        raw = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        return tf.getmembers(), raw


def test_pack_writes_bundle_and_sha256_file(source, tmp_path):
    result = pack_dir(source, tmp_path / "dist")
    assert result.path == tmp_path / "dist" / "echo-1.0.0.fbundle"
    assert result.sha256 == hashlib.sha256(result.path.read_bytes()).hexdigest()
    assert result.size == result.path.stat().st_size
    sidecar = result.path.with_name("echo-1.0.0.fbundle.sha256").read_text()
    assert sidecar == f"{result.sha256}  echo-1.0.0.fbundle\n"
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == ["echo-1.0.0.fbundle",
                                                                     "echo-1.0.0.fbundle.sha256"]
    assert not result.signed


def test_layout_is_a_deterministic_standard_tar(source, tmp_path):
    result = pack_dir(source, tmp_path / "dist")
    members, _ = _members(result.path)
    assert [m.name for m in members] == ["service.json", "lib/util.py", "models/weights.bin", "run.sh",
                                         "worker.py"]
    assert all(m.isreg() and m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == "" for m in members)
    assert {m.name: m.mode for m in members}["run.sh"] == 0o755
    assert {m.mode for m in members if m.name != "run.sh"} == {0o644}
    # created_at 2025-12-17T00:00:00Z
    assert {m.mtime for m in members} == {1765929600}
    table = {f.path: f for f in result.manifest.files}
    assert table["worker.py"].sha256 == hashlib.sha256(b"print('echo')\n").hexdigest()
    assert table["run.sh"].mode == 0o755


def test_same_input_gives_identical_bytes(tmp_path, monkeypatch):
    # Larger than one zstd multi-threaded job, half compressible.
    files = {"big.bin": (os.urandom(1 << 20) + b"text " * 400_000) * 4 + os.urandom(SMALL_FILE + 17), "a.txt": b"a" * 5000, "z/y.txt": b"y",
             "worker.py": b"w"}
    one = write_source(tmp_path / "one", files)
    two = write_source(tmp_path / "two", files)
    os.utime(two / "a.txt", (1, 1))  # mtimes and thread counts must not matter
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    first = pack_dir(one, tmp_path / "d1")
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    second = pack_dir(two, tmp_path / "d2")
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.sha256 == second.sha256


def test_source_date_epoch_sets_mtime(source, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    members, _ = _members(pack_dir(source, tmp_path / "d").path)
    assert {m.mtime for m in members} == {1700000000}


def test_without_created_at_the_newest_file_dates_the_bundle(tmp_path):
    src = write_source(tmp_path / "src", {"a.py": b"a"}, models=[])
    data = json.loads((src / "service.json").read_text())
    del data["created_at"]
    (src / "service.json").write_text(json.dumps(data))
    os.utime(src / "a.py", (1_600_000_000, 1_600_000_000))
    os.utime(src / "service.json", (1_500_000_000, 1_500_000_000))
    result = pack_dir(src, tmp_path / "d")
    assert result.manifest.created_at == "2020-09-13T12:26:40Z"


def test_ignore_rules_and_defaults(tmp_path):
    src = write_source(tmp_path / "src", {
        "worker.py": b"w", "notes.tmp": b"x", "keep.tmp": b"k", "build/out.o": b"o", ".git/HEAD": b"ref",
        "pkg/__pycache__/m.cpython-311.pyc": b"c", "pkg/m.pyc": b"c", "pkg/m.py": b"m", ".DS_Store": b"d",
        "checksum.sha256": b"old",
    })
    (src / ".flowctlignore").write_text("# scratch\n*.tmp\n!keep.tmp\n/build/\n")
    result = pack_dir(src, tmp_path / "d")
    assert [f.path for f in result.manifest.files] == ["keep.tmp", "pkg/m.py", "worker.py"]


def test_symlink_in_source_is_an_error_naming_it(source, tmp_path):
    (source / "lib" / "link.py").symlink_to("util.py")
    with pytest.raises(SourceError, match=r"lib/link.py.*symbolic link"):
        pack_dir(source, tmp_path / "d")
    assert not (tmp_path / "d").exists() or list((tmp_path / "d").iterdir()) == []


def test_fifo_in_source_is_an_error(source, tmp_path):
    os.mkfifo(source / "pipe")
    with pytest.raises(SourceError, match="pipe.*FIFO"):
        pack_dir(source, tmp_path / "d")


def test_invalid_service_json_names_the_field(tmp_path):
    src = write_source(tmp_path / "src", version="1.0")
    with pytest.raises(ManifestError, match=r"service.json: version '1.0' is not SemVer"):
        pack_dir(src, tmp_path / "d")


def test_missing_service_json(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(ManifestError, match="service.json: not found"):
        pack_dir(tmp_path / "src", tmp_path / "d")


def test_model_path_must_exist(tmp_path):
    src = write_source(tmp_path / "src", {"a.py": b"a"})
    with pytest.raises(ManifestError, match="'worker.py' names no file"):
        pack_dir(src, tmp_path / "d")


def test_failure_midway_leaves_nothing(source, tmp_path, monkeypatch):
    out = tmp_path / "d"
    out.mkdir()
    import packer.pack as pack_module

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pack_module, "_write_text_atomically", boom)
    monkeypatch.setattr(pack_module, "_write_atomically", boom)
    with pytest.raises(OSError):
        pack_dir(source, out)
    assert list(out.iterdir()) == []


def test_rejects_bad_level_and_format(source, tmp_path):
    with pytest.raises(PackerError, match="level"):
        pack_dir(source, tmp_path, level=30)
    with pytest.raises(PackerError, match="format"):
        pack_dir(source, tmp_path, fmt="rar")


def test_progress_counts_reading_then_writing(source, tmp_path):
    seen = []
    result = pack_dir(source, tmp_path / "d", progress=seen.append)
    assert sum(seen) == 2 * result.manifest.total_size


def test_large_and_long_named_files_round_trip(tmp_path):
    long_name = "d" * 90 + "/" + "ü" * 60 + ".txt"
    src = write_source(tmp_path / "src", {"worker.py": b"w", long_name: b"unicode", "big.bin": os.urandom(5 << 20)})
    result = pack_dir(src, tmp_path / "d")
    members, _ = _members(result.path)  # tarfile agrees with our PAX headers
    assert long_name in [m.name for m in members]
    report = verify_bundle(result.path, expected_sha256=result.sha256)
    assert report.file_count == 3 and report.total_size == (5 << 20) + 8
    with open(result.path, "rb") as f, open_bundle(f) as reader:
        for entry, chunks in reader.iter_files():
            data = b"".join(chunks)
            assert hashlib.sha256(data).hexdigest() == entry.sha256


def test_output_directory_inside_the_source_is_not_packed(source):
    first = pack_dir(source, source / "dist")
    second = pack_dir(source, source / "dist")  # dist/ now holds a bundle: still left out
    assert first.sha256 == second.sha256
    assert not any(f.path.startswith("dist/") for f in second.manifest.files)
