import hashlib

import pytest

from packer import (
    Limits,
    NotABundle,
    PackerError,
    open_bundle,
    pack_dir,
    unpack_bundle,
    verify_bundle,
)
from packer.reader import CHUNK
from tests.packer.conftest import write_source
from tests.packer.test_hostile import NonSeekable


@pytest.fixture
def bundle(tmp_path):
    src = write_source(tmp_path / "src", {"worker.py": b"w" * 10, "data/big.bin": bytes(range(256)) * 20_000,
                                          "empty.txt": b""})
    return pack_dir(src, tmp_path / "d")


def test_streams_files_in_manifest_order_without_seeking(bundle):
    with open_bundle(NonSeekable(bundle.path.read_bytes())) as reader:
        assert reader.manifest == bundle.manifest
        assert reader.manifest_bytes == bundle.manifest.canonical_bytes()
        assert reader.signature is None
        seen = []
        for entry, chunks in reader.iter_files():
            parts = list(chunks)
            assert all(0 < len(p) <= CHUNK for p in parts)
            assert hashlib.sha256(b"".join(parts)).hexdigest() == entry.sha256
            seen.append(entry.path)
    assert seen == ["data/big.bin", "empty.txt", "worker.py"]


def test_unread_chunks_are_still_checked_and_iteration_is_once(bundle):
    with open(bundle.path, "rb") as f, open_bundle(f) as reader:
        assert [entry.path for entry, _chunks in reader.iter_files()] == [f.path for f in bundle.manifest.files]
        with pytest.raises(PackerError, match="only once"):
            list(reader.iter_files())


def test_mismatch_raises_before_the_chunk_iterator_ends(bundle, tmp_path):
    # Build the same bundle with a different big.bin but the original manifest.
    from tests.packer.hostile import member, zst

    m = bundle.manifest
    body = b"".join(member(f.path, b"x" * f.size, mode=f.mode) for f in m.files)
    blob = zst(member("service.json", m.canonical_bytes()) + body + bytes(1024))
    with open_bundle(NonSeekable(blob)) as reader:
        entry, chunks = next(reader.iter_files())
        got = 0
        with pytest.raises(PackerError, match="sha256 mismatch"):
            for chunk in chunks:
                got += len(chunk)
        assert got < entry.size  # the last chunk was never handed out


def test_limits_apply_before_any_file_is_read(bundle):
    with pytest.raises(PackerError, match=r"limit 100"):
        open_bundle(NonSeekable(bundle.path.read_bytes()), limits=Limits(max_file_bytes=100))


def test_decoding_stops_at_what_the_manifest_declares():
    # 16 MiB of zeros after the end-of-archive marker: the decoder stops within one read chunk
    # of what the manifest declares instead of expanding the rest.
    from tests.packer.hostile import good_tar, zst

    blob = zst(good_tar() + bytes(16 << 20))
    reader = open_bundle(NonSeekable(blob))
    with reader, pytest.raises(PackerError, match="trailing data"):
        for _entry, chunks in reader.iter_files():
            for _ in chunks:
                pass
    assert reader._tar.produced <= len(good_tar()) + CHUNK  # private, but the budget is the point


def test_manifest_budget_bounds_decoding_before_the_manifest_is_known():
    from tests.packer.hostile import header, zst

    blob = zst(header("service.json", 8 << 20) + b"{" + bytes(8 << 20))
    reader_limits = Limits(max_manifest_bytes=1 << 20)
    with pytest.raises(PackerError, match="limit"):
        open_bundle(NonSeekable(blob), limits=reader_limits)


@pytest.mark.parametrize("blob, reason", [(b"hello, world\n", "it does not start with a zstd frame"),
                                          (b"PK", "it does not start with a zstd frame"),
                                          (b"", "the file is empty")])
def test_a_file_that_is_not_a_bundle_says_so_and_names_the_file(tmp_path, blob, reason):
    path = tmp_path / "notes.txt"
    path.write_bytes(blob)
    with pytest.raises(NotABundle) as info, open(path, "rb") as f:
        open_bundle(f, source=str(path))
    assert info.value.source == str(path) and info.value.reason == reason
    assert str(info.value) == f"{str(path)!r} is not a flowctl bundle (.fbundle): {reason}"
    for check in (lambda: verify_bundle(path), lambda: unpack_bundle(path, tmp_path / "out")):
        with pytest.raises(NotABundle, match="notes.txt' is not a flowctl bundle"):
            check()
    with pytest.raises(NotABundle) as anonymous:
        open_bundle(NonSeekable(blob))
    assert str(anonymous.value) == f"not a flowctl bundle (.fbundle): {reason}"


def test_trailing_data_is_not_called_not_a_bundle(bundle):
    with pytest.raises(PackerError) as info:
        with open_bundle(NonSeekable(bundle.path.read_bytes() + b"GARBAGE!")) as reader:
            for _entry, chunks in reader.iter_files():
                for _ in chunks:
                    pass
    assert not isinstance(info.value, NotABundle)
    assert "trailing data" in str(info.value)


def _read_all(fileobj):
    with open_bundle(fileobj, digest=True) as reader:
        files = {entry.path: b"".join(bytes(c) for c in chunks) for entry, chunks in reader.iter_files(views=True)}
        return files, reader.file_sha256(), reader.raw_size


def test_a_regular_file_read_ahead_on_its_own_thread_gives_what_a_stream_gives(bundle):
    # A regular file is read, walked and hashed several chunks ahead of the decoder, on a
    # thread; any other stream is read where the decoder asks. Same answers either way.
    data = bundle.path.read_bytes()
    with open(bundle.path, "rb", buffering=0) as f:
        from_file = _read_all(f)
    from_stream = _read_all(NonSeekable(data))
    assert from_file == from_stream
    assert from_file[1] == hashlib.sha256(data).hexdigest() == bundle.sha256
    assert from_file[2] == len(data)


@pytest.mark.parametrize("cut", [0.5, 0.999])
def test_a_truncated_regular_file_fails_like_a_truncated_stream(bundle, tmp_path, cut):
    data = bundle.path.read_bytes()
    short = tmp_path / "short.fbundle"
    short.write_bytes(data[:int(len(data) * cut)])
    errors = []
    for opener in (lambda: open(short, "rb", buffering=0), lambda: NonSeekable(short.read_bytes())):
        with pytest.raises(PackerError) as info, opener() as f:
            _read_all(f)
        errors.append(str(info.value))
    assert errors[0] == errors[1]
    assert "truncated" in errors[0]
