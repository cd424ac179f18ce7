import pytest

from hub_store import InvalidIdentifier, ids


def test_good_identifiers_pass():
    assert ids.service_id("llama-chat") == "llama-chat"
    assert ids.model_id("Gemma-3:270m") == "Gemma-3:270m"
    assert ids.version_ref("latest") == "latest"
    assert ids.version("1.2.3-rc.1") == "1.2.3-rc.1"
    assert ids.digest("sha256:" + "a" * 64) == "a" * 64
    assert ids.split_ref("echo@1.0.0") == ("echo", "1.0.0")
    assert ids.split_ref("echo") == ("echo", "latest")


@pytest.mark.parametrize("fn,value", [
    (ids.service_id, ".."), (ids.service_id, "Echo"), (ids.service_id, "a/b"), (ids.service_id, "a\x00"),
    (ids.service_id, "x" * 65), (ids.model_id, "../m"), (ids.version, "1.0"), (ids.version, "v1.0.0"),
    (ids.version, "1.0.0/../x"), (ids.digest, "sha256:" + "A" * 64), (ids.digest, "md5:" + "a" * 64),
    (ids.file_path, "../x"), (ids.file_path, "/etc/passwd"), (ids.file_path, "a\\b"),
    (ids.file_path, "a/\x00"), (ids.file_path, "a//b"), (ids.service_id, 5),
])
def test_bad_identifiers_are_rejected_with_the_value_shown(fn, value):
    with pytest.raises(InvalidIdentifier) as info:
        fn(value)
    assert repr(value)[:20] in str(info.value)
