"""Checking what a command left under $FLOWCTL_OUTPUT_DIR: names, links, sizes, hashes."""

import hashlib
import os

import pytest

from runtime.jobs.artifacts import ArtifactError, ArtifactLimits, ArtifactTooLarge
from runtime.jobs.output_files import collect_outputs


def test_files_and_inside_links_are_collected_with_their_digests(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_bytes(b"abc")
    (tmp_path / "link").symlink_to("d/a.txt")  # inside: its target's bytes
    (tmp_path / "dirlink").symlink_to("d")  # inside: its files are reached as d/...
    found = collect_outputs(tmp_path, ArtifactLimits())
    assert [(f.path, f.size, f.digest) for f in found] == [
        ("d/a.txt", 3, hashlib.sha256(b"abc").hexdigest()), ("link", 3, hashlib.sha256(b"abc").hexdigest())]
    assert collect_outputs(tmp_path / "missing", ArtifactLimits()) == []


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: (d / "x").symlink_to("/etc/hostname"), "is a symbolic link to '/etc/hostname', outside"),
    (lambda d: (d / "up").symlink_to(".."), "is a symbolic link to '..', outside"),
    (lambda d: (d / "gone").symlink_to("nowhere"), "is a broken symbolic link"),
    (lambda d: os.mkfifo(d / "fifo"), "'fifo' is not a regular file"),
    (lambda d: (d / "bad\nname").write_text("x"), "not a plain relative path"),
])
def test_links_out_of_the_dir_and_odd_files_are_refused(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(ArtifactError, match=message):
        collect_outputs(tmp_path, ArtifactLimits())


def test_limits_name_the_file_and_the_limit(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 10)
    (tmp_path / "b").write_bytes(b"x" * 10)
    with pytest.raises(ArtifactTooLarge, match="artifact 'a' is 10 bytes, over the limit of 9 bytes per file"):
        collect_outputs(tmp_path, ArtifactLimits(max_file_bytes=9))
    with pytest.raises(ArtifactTooLarge, match="exceed the limit of 15 bytes per attempt .at 'b'"):
        collect_outputs(tmp_path, ArtifactLimits(max_total_bytes=15))
    with pytest.raises(ArtifactTooLarge, match="more than 1 artifacts"):
        collect_outputs(tmp_path, ArtifactLimits(max_files=1))
