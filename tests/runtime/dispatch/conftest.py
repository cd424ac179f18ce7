"""The gateway's in-process plane (hub + scheduler + gateway, the echo worker) for dispatch tests."""

from tests.runtime.gateway.conftest import cluster  # noqa: F401 - the fixture, shared
