import pytest

from packer import parse_version


def test_precedence_follows_semver():
    order = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
             "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.10.0", "2.0.0"]
    parsed = [parse_version(v) for v in order]
    assert parsed == sorted(reversed(parsed))
    assert parse_version("1.0.0+build.5") == parse_version("1.0.0")
    assert str(parse_version("1.2.3-rc.1+b7")) == "1.2.3-rc.1+b7"


@pytest.mark.parametrize("text", ["1.0", "01.0.0", "1.0.0-", "1.0.0-01", "v1.0.0", "1.0.0 ", ""])
def test_rejects_non_semver(text):
    with pytest.raises(ValueError, match="is not SemVer"):
        parse_version(text)
