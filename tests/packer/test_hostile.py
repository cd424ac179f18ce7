"""Every crafted hostile bundle is rejected by open_bundle, verify_bundle and unpack_bundle,
with a one-line reason, and unpack leaves nothing behind."""

import io
from pathlib import Path

import pytest

from packer import Limits, PackerError, open_bundle, unpack_bundle, verify_bundle
from tests.packer.hostile import build_cases


def _keys():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()


SIGNING_KEY, OTHER_KEY = _keys()
CASES = build_cases(SIGNING_KEY, OTHER_KEY)


def test_corpus_is_large_enough():
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


class NonSeekable(io.RawIOBase):
    """A stream that refuses to seek, as a network body would."""

    def __init__(self, data: bytes):
        self._inner = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, b):
        return self._inner.readinto(b)


def _kwargs(case):
    kw = {"limits": Limits(**case.limits)}
    if case.verify_kw.get("trust"):
        kw.update(trusted_keys=[SIGNING_KEY.public_key()], require_signature=True)
    if case.verify_kw.get("require_signature"):
        kw["require_signature"] = True
    return kw


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text
    return text


@pytest.mark.parametrize("case", [c for c in CASES if not c.verify_kw], ids=lambda c: c.name)
def test_open_bundle_rejects(case):
    with pytest.raises(PackerError) as info:
        with open_bundle(NonSeekable(case.blob), limits=Limits(**case.limits)) as reader:
            for _entry, chunks in reader.iter_files():
                for _ in chunks:
                    pass
    assert case.message in _one_line(info.value)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_verify_bundle_rejects(case, tmp_path):
    path = tmp_path / "evil.fbundle"
    path.write_bytes(case.blob)
    kw = _kwargs(case)
    if "expected_sha256" in case.verify_kw:
        kw["expected_sha256"] = case.verify_kw["expected_sha256"]
    with pytest.raises(PackerError) as info:
        verify_bundle(path, **kw)
    assert case.message in _one_line(info.value)


@pytest.mark.parametrize("case", [c for c in CASES if "expected_sha256" not in c.verify_kw],
                         ids=lambda c: c.name)
def test_unpack_bundle_rejects_and_leaves_nothing(case, tmp_path):
    box = tmp_path / "box"
    box.mkdir()
    bundle = tmp_path / "evil.fbundle"
    bundle.write_bytes(case.blob)
    dest = box / "dest"
    with pytest.raises(PackerError) as info:
        unpack_bundle(bundle, dest, **_kwargs(case))
    assert case.message in _one_line(info.value)
    assert list(box.iterdir()) == []  # no dest, no staging dir
    assert sorted(p.name for p in tmp_path.iterdir()) == ["box", "evil.fbundle"]
    assert not Path("/etc/evil").exists() and not (tmp_path.parent / "evil").exists()
