import stat

import pytest

from packer import (
    SignatureError,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    pack_dir,
    sign_manifest,
    unpack_bundle,
    verify_bundle,
    verify_signature,
)


@pytest.fixture
def keys(tmp_path):
    private, public = generate_keypair(tmp_path / "keys" / "release")
    return private, public


def test_generate_keypair_files(keys):
    private, public = keys
    assert private.name == "release.key" and public.name == "release.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes() and b"PUBLIC KEY" in public.read_bytes()
    assert key_id(load_private_key(private).public_key()) == key_id(load_public_key(public))
    with pytest.raises(SignatureError, match="already exists"):
        generate_keypair(private.with_suffix(""))


def test_sign_and_verify(keys):
    private, public = keys
    sig = sign_manifest(b"manifest", load_private_key(private))
    kid = verify_signature(b"manifest", sig, [load_public_key(public)])
    assert kid == key_id(load_public_key(public))
    with pytest.raises(SignatureError, match="does not verify"):
        verify_signature(b"manifest!", sig, [load_public_key(public)])
    with pytest.raises(SignatureError, match="no trusted key"):
        verify_signature(b"manifest", sig, [])


def test_not_a_key(tmp_path):
    bogus = tmp_path / "bogus.pub"
    bogus.write_text("hello")
    with pytest.raises(SignatureError, match="not a PEM public key"):
        load_public_key(bogus)
    with pytest.raises(SignatureError, match="not an unencrypted PEM private key"):
        load_private_key(bogus)


def test_signed_bundle_verifies_with_trusted_key_only(source, tmp_path, keys):
    private, public = keys
    result = pack_dir(source, tmp_path / "d", signing_key=private)
    assert result.signed
    kid = key_id(load_public_key(public))
    report = verify_bundle(result.path, trusted_keys=[load_public_key(public)], require_signature=True)
    assert report.signature == f"valid ({kid})" and report.key_id == kid
    assert verify_bundle(result.path).signature.startswith(f"signed by {kid}")
    other_private, other_public = generate_keypair(tmp_path / "other")
    with pytest.raises(SignatureError, match="not among the trusted keys"):
        verify_bundle(result.path, trusted_keys=[load_public_key(other_public)])
    with pytest.raises(SignatureError, match="not among the trusted keys"):
        unpack_bundle(result.path, tmp_path / "out", trusted_keys=[load_public_key(other_public)])
    assert not (tmp_path / "out").exists()


def test_signing_keeps_packing_deterministic(source, tmp_path, keys):
    private, _ = keys
    a = pack_dir(source, tmp_path / "a", signing_key=private)
    b = pack_dir(source, tmp_path / "b", signing_key=private)
    assert a.sha256 == b.sha256  # Ed25519 signatures are deterministic
    unsigned = pack_dir(source, tmp_path / "c")
    assert unsigned.manifest == a.manifest and unsigned.sha256 != a.sha256
