import pytest

from packer.ignore import DEFAULT_PATTERNS, IgnoreRules


@pytest.mark.parametrize(
    ("patterns", "path", "is_dir", "ignored"),
    [
        (["*.log"], "a/b/x.log", False, True),
        (["/build"], "build", True, True),
        (["/build"], "src/build", True, False),
        (["docs/*.md"], "docs/a.md", False, True),
        (["docs/*.md"], "docs/sub/a.md", False, False),
        (["**/tmp"], "a/b/tmp", True, True),
        (["data/**"], "data/x/y.bin", False, True),
        (["a/**/z"], "a/z", False, True),
        (["a/**/z"], "a/b/c/z", False, True),
        (["cache/"], "cache", False, False),
        (["cache/"], "cache", True, True),
        (["*.bin", "!keep.bin"], "keep.bin", False, False),
        (["file?.txt"], "file1.txt", False, True),
        (["file[0-9].txt"], "filea.txt", False, False),
        (["\\#notes"], "#notes", False, True),
        (["# comment", ""], "# comment", False, False),
    ],
)
def test_gitignore_semantics(patterns, path, is_dir, ignored):
    assert IgnoreRules(patterns).ignored(path, is_dir=is_dir) is ignored


def test_defaults():
    rules = IgnoreRules(DEFAULT_PATTERNS)
    assert rules.ignored(".git", is_dir=True)
    assert rules.ignored("pkg/__pycache__", is_dir=True)
    assert rules.ignored("m.pyc", is_dir=False)
    assert rules.ignored("a/.DS_Store", is_dir=False)
    assert not rules.ignored("main.py", is_dir=False)


def test_ignore_file_must_be_utf8(tmp_path):
    from packer import PackerError

    (tmp_path / ".flowctlignore").write_bytes(b"\xff\xfe*.log\n")
    with pytest.raises(PackerError, match="not valid UTF-8"):
        IgnoreRules.for_source(tmp_path)
