"""Strict parsing of the identifiers that come from outside (URLs, CLI, bundles).

Every id, version, digest and file path is checked here before it is used to
look anything up or to build a filesystem path.
"""

from __future__ import annotations

import re

from hub_store.errors import InvalidIdentifier
from packer.manifest import MODEL_ID_PATTERN, SERVICE_ID_PATTERN, check_path
from packer.semver import parse_version as _parse_semver

LATEST = "latest"
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
_SERVICE_ID = re.compile(SERVICE_ID_PATTERN)
_MODEL_ID = re.compile(MODEL_ID_PATTERN)
_HEX = re.compile(r"^[0-9a-f]{64}$")
_DIGEST = re.compile(DIGEST_PATTERN)


def _check(kind: str, value: object, pattern: re.Pattern, max_len: int) -> str:
    if not isinstance(value, str) or len(value) > max_len or not pattern.match(value):
        raise InvalidIdentifier(kind, value)
    return value


def service_id(value: object) -> str:
    """A service id (packer.SERVICE_ID_PATTERN) or InvalidIdentifier."""
    return _check("service id", value, _SERVICE_ID, 64)


def model_id(value: object) -> str:
    """A model id (packer.MODEL_ID_PATTERN) or InvalidIdentifier."""
    return _check("model id", value, _MODEL_ID, 128)


def version(value: object) -> str:
    """A SemVer version string or InvalidIdentifier."""
    try:
        _parse_semver(value)  # type: ignore[arg-type]
    except ValueError:
        raise InvalidIdentifier("version", value) from None
    return value  # type: ignore[return-value]


def version_ref(value: object) -> str:
    """A SemVer version or the word `latest`."""
    return LATEST if value == LATEST else version(value)


_MODEL_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")


def model_version_ref(value: object) -> str:
    """A model's version label (SemVer usually, free-form but plain) or `latest`."""
    return _check("model version", value, _MODEL_VERSION, 64)


def hex_digest(value: object) -> str:
    """A bare lowercase sha256 hex digest (64 chars) or InvalidIdentifier."""
    return _check("sha256 digest", value, _HEX, 64)


def digest(value: object) -> str:
    """`sha256:<64 hex>` -> the bare hex; anything else is InvalidIdentifier."""
    return _check("digest", value, _DIGEST, 71)[len("sha256:"):]


def file_path(value: object) -> str:
    """A relative file path inside a bundle (no '..', no absolute, no backslash, no NUL)."""
    if not isinstance(value, str):
        raise InvalidIdentifier("file path", value)
    try:
        return check_path(value)
    except ValueError:
        raise InvalidIdentifier("file path", value) from None


def split_ref(text: str) -> tuple[str, str]:
    """`SERVICE[@VERSION]` -> (service_id, version or 'latest')."""
    sid, _, ver = text.partition("@")
    return service_id(sid), version_ref(ver or LATEST)
