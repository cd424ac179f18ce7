"""A seed zip becomes a bundle, deterministically; a hostile one is refused with one line and leaves nothing."""

from __future__ import annotations

import hashlib
import stat
import zipfile

import pytest

from packer import (
    LimitExceeded,
    Limits,
    ManifestError,
    PackerError,
    bundle_from_zip,
    is_zip,
    open_bundle,
    write_zip,
)
from packer.zipcheck import ZipRefused
from tests.packer.seedzips import (
    FILES,
    checksum_text,
    encrypted_zip,
    lying_size_zip,
    overlapping_zip,
    seed_zip,
    symlink_zip,
    unix_entry,
)


def convert(tmp_path, data: bytes, **kwargs):
    tmp_path.mkdir(parents=True, exist_ok=True)
    src = tmp_path / "upload.zip"
    src.write_bytes(data)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return bundle_from_zip(src, out, **kwargs), out


def test_seed_zip_becomes_a_bundle_with_its_files_and_fields(tmp_path):
    result, out = convert(tmp_path, seed_zip())
    m = result.manifest
    assert (m.service_id, m.version, m.port, m.service_type) == ("nmt-m2m100", "1.0.0", 5008, "python")
    assert m.models[0].model_type == "nmt" and m.models[0].path == "models/nmt/m2m100-en-zh"
    assert {f.path: f.sha256 for f in m.files} == {p: hashlib.sha256(d).hexdigest() for p, d in FILES.items()}
    assert sorted(p.name for p in out.iterdir()) == ["nmt-m2m100-1.0.0.fbundle", "nmt-m2m100-1.0.0.fbundle.sha256"]
    with open(result.path, "rb") as f, open_bundle(f) as reader:
        assert {e.path: b"".join(chunks) for e, chunks in reader.iter_files()} == FILES


def test_same_zip_gives_the_same_bundle_bytes(tmp_path):
    data = seed_zip(service={"created_at": ""})  # created_at then comes from the members' times
    first, _ = convert(tmp_path / "a", data)
    second, _ = convert(tmp_path / "b", data)
    assert first.sha256 == second.sha256


def test_files_in_one_top_level_directory_and_without_checksum_are_accepted(tmp_path):
    result, _ = convert(tmp_path / "a", seed_zip(prefix="nmt-m2m100-1.0.0/"))
    assert {f.path for f in result.manifest.files} == set(FILES)
    result, _ = convert(tmp_path / "b", seed_zip(with_checksum=False))
    assert {f.path for f in result.manifest.files} == set(FILES)


def test_executable_bit_survives(tmp_path):
    run = unix_entry("run.sh", stat.S_IFREG | 0o755)
    files = dict(FILES)
    checksum = checksum_text({**files, "run.sh": b"#!/bin/sh\n"})
    result, _ = convert(tmp_path, seed_zip(files, checksum=checksum, extra=[(run, b"#!/bin/sh\n")]))
    assert {f.path: f.mode for f in result.manifest.files}["run.sh"] == 0o755


def test_the_hubs_own_zip_converts_back_to_the_same_bundle(tmp_path):
    first, _ = convert(tmp_path / "a", seed_zip())
    exported = tmp_path / "exported.zip"
    write_zip(first.path, exported)
    again, _ = convert(tmp_path / "b", exported.read_bytes())
    assert again.sha256 == first.sha256


def test_is_zip(tmp_path):
    (tmp_path / "z").write_bytes(seed_zip())
    (tmp_path / "b").write_bytes(b"\x28\xb5\x2f\xfd rest")
    assert is_zip(tmp_path / "z") and not is_zip(tmp_path / "b")


def _entry(name: str) -> tuple[zipfile.ZipInfo, bytes]:
    return zipfile.ZipInfo(name, date_time=(2025, 12, 17, 0, 0, 0)), b"x"


BAD_LINE = b"0123  nmt_service.py\n"
WRONG_DIGEST = checksum_text({**FILES, "nmt_service.py": b"other"})
HOSTILE = {
    "zip slip": (seed_zip(extra=[_entry("../evil.py")]), "safe relative path"),
    "deep zip slip": (seed_zip(extra=[_entry("models/../../evil.py")]), "safe relative path"),
    "absolute path": (seed_zip(extra=[_entry("/etc/cron.d/evil")]), "safe relative path"),
    "windows drive": (seed_zip(extra=[_entry("C:/evil")]), "safe relative path"),
    "backslash": (seed_zip(extra=[_entry("..\\evil.py")]), "safe relative path"),
    "symlink": (symlink_zip(), "symbolic link"),
    "fifo": (seed_zip(extra=[(unix_entry("pipe", stat.S_IFIFO | 0o644), b"")]), "not a regular file"),
    "duplicate name": (seed_zip(extra=[_entry("README.md")]), "appears twice"),
    "case collision": (seed_zip(extra=[_entry("readme.md")]), "ignoring case"),
    "file and directory": (seed_zip(extra=[_entry("README.md/x")]), "both a file and a directory"),
    "overlapping entries": (overlapping_zip(), "overlaps"),
    "lying size": (lying_size_zip(), "corrupt"),
    "no service.json": (seed_zip(service={}, prefix="a/", extra=[_entry("b/x")]), "not found"),
    "bad service.json": (seed_zip(service={"version": "one"}), "SemVer"),
    "checksum mismatch": (seed_zip(checksum=WRONG_DIGEST), "does not match checksum.sha256"),
    "checksum malformed": (seed_zip(checksum=BAD_LINE), "sha256sum format"),
    "checksum lists a missing file": (seed_zip(checksum=checksum_text({**FILES, "gone.py": b""})),
                                      "not a file of the zip"),
    "checksum leaves a file out": (seed_zip(checksum=checksum_text({"README.md": FILES["README.md"]})),
                                   "not listed in checksum.sha256"),
    "checksum empty": (seed_zip(checksum=b"\n"), "lists no files"),
    "not a zip": (b"PK\x03\x04 but nothing after", "not a readable zip"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_zips_are_refused_with_one_line_and_leave_nothing(tmp_path, name):
    data, reason = HOSTILE[name]
    with pytest.raises(PackerError) as exc:
        convert(tmp_path, data)
    message = str(exc.value)
    assert reason in message and "\n" not in message
    assert isinstance(exc.value, ZipRefused | ManifestError)
    assert list((tmp_path / "out").iterdir()) == []


def test_encrypted_member_is_refused(tmp_path):
    with pytest.raises(ZipRefused, match="'README.md': is encrypted"):
        convert(tmp_path, encrypted_zip())


def test_size_limits_and_zip_bombs(tmp_path):
    with pytest.raises(LimitExceeded, match="over the limit"):
        convert(tmp_path / "a", seed_zip(), limits=Limits(max_total_bytes=1000))
    with pytest.raises(LimitExceeded, match="over the limit"):
        convert(tmp_path / "b", seed_zip(), limits=Limits(max_file_bytes=100))
    with pytest.raises(LimitExceeded, match="more than the limit"):
        convert(tmp_path / "c", seed_zip(), limits=Limits(max_files=2))
    bomb = seed_zip({**FILES, "zeros.bin": bytes(80 << 20)}, checksum=checksum_text({**FILES, "zeros.bin": b""}))
    assert len(bomb) < 1 << 20
    with pytest.raises(LimitExceeded, match="zip bomb"):
        convert(tmp_path / "d", bomb)
    assert list((tmp_path / "d" / "out").iterdir()) == []


def test_reserve_is_asked_before_anything_is_written(tmp_path):
    asked = []

    def reserve(n):
        asked.append(n)
        raise PackerError("no room")

    with pytest.raises(PackerError, match="no room"):
        convert(tmp_path, seed_zip(), reserve=reserve)
    assert len(asked) == 1 and asked[0] > sum(map(len, FILES.values()))  # the files, service.json too
    assert list((tmp_path / "out").iterdir()) == []
