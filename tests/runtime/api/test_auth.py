"""The admin key: generated once and stored hashed, replaced by the environment's, checked in constant time."""

import pytest

from runtime.api import bearer_ok, ensure_admin_key, hash_key


def test_a_key_is_generated_once_and_only_its_hash_is_stored(tmp_path):
    digest, key = ensure_admin_key(tmp_path, None)
    assert key is not None and key.startswith("fck_") and digest == hash_key(key)
    assert key not in (tmp_path / "admin_key.sha256").read_text()
    assert (tmp_path / "admin_key.sha256").stat().st_mode & 0o777 == 0o600
    assert ensure_admin_key(tmp_path, None) == (digest, None)


def test_the_environments_key_replaces_the_stored_one(tmp_path):
    ensure_admin_key(tmp_path, None)
    assert ensure_admin_key(tmp_path, "rotated") == (hash_key("rotated"), None)
    assert ensure_admin_key(tmp_path, None) == (hash_key("rotated"), None)


@pytest.mark.parametrize(("header", "ok"), [
    ("Bearer secret", True), ("bearer  secret ", True), ("Bearer other", False), ("Basic secret", False),
    ("Bearer ", False), ("secret", False), ("", False), (None, False),
])
def test_bearer_ok(header, ok):
    assert bearer_ok(header, hash_key("secret")) is ok
