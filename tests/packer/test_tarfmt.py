import io
import tarfile

import pytest

from packer import BundleError
from packer.tarfmt import BLOCK, file_header, member_overhead, parse_header, parse_pax


def test_short_ascii_path_is_one_ustar_block():
    block = file_header("a/b.py", 10, 0o755, 1_700_000_000)
    assert len(block) == BLOCK
    header = parse_header(block)
    assert (header.name, header.size, header.mode, header.typeflag) == ("a/b.py", 10, 0o755, b"0")


def test_long_ascii_path_uses_the_prefix_field():
    path = "d" * 120 + "/" + "f" * 90
    block = file_header(path, 1, 0o644, 0)
    assert len(block) == BLOCK and parse_header(block).name == path


@pytest.mark.parametrize("path", ["ü.txt", "x" * 300, "a/" * 120 + "b" * 99, "dir/" + "é" * 120])
def test_pax_path_round_trips_through_tarfile(path):
    data = b"hello"
    raw = file_header(path, len(data), 0o644, 0) + data + bytes(BLOCK - len(data)) + bytes(2 * BLOCK)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        (member,) = tf.getmembers()
        assert member.name == path and tf.extractfile(member).read() == data
    pax_block = parse_header(raw[:BLOCK])
    records = parse_pax(raw[BLOCK:BLOCK + pax_block.size])
    assert records == {"path": path}


def test_huge_size_goes_in_a_pax_record():
    size = 10 << 30
    raw = file_header("model.bin", size, 0o644, 0)
    pax = parse_header(raw[:BLOCK])
    assert parse_pax(raw[BLOCK:BLOCK + pax.size]) == {"size": str(size)}
    assert member_overhead("model.bin", size) == len(raw)


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"6 bad\n", "without '='"), (b"99 path=x\n", "overruns"), (b"x path=y\n", "bad record length"),
     (b"12 uname=ab\n", "'uname' is not allowed"), (b"10 size=x\n", "not a number")],
)
def test_bad_pax_records(data, message):
    with pytest.raises(BundleError, match=message):
        parse_pax(data)
