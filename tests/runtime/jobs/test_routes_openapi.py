"""The jobs role's routes are all in the plane's OpenAPI description, and it is valid OpenAPI 3.0."""

import pytest
from schemathesis.specs.openapi.definitions import OPENAPI_30_VALIDATOR

import tests.runtime.api.test_plane_openapi as plane_checks
from runtime.plane_openapi import plane_document

ROLE_SETS = [("jobs",), ("hub", "scheduler", "gateway", "jobs")]


@pytest.mark.parametrize("roles", ROLE_SETS, ids=["+".join(r) for r in ROLE_SETS])
async def test_every_jobs_route_is_described(nursery, tmp_path, roles):
    await plane_checks.test_every_served_route_is_described_and_every_described_one_served(nursery, tmp_path, roles)


def test_the_description_is_valid_openapi():
    doc = plane_document(("hub", "scheduler", "gateway", "jobs"))
    assert not list(OPENAPI_30_VALIDATOR.iter_errors(doc))
    assert doc["paths"]["/api/v1/hooks/{tenant}/{name}"]["post"]["security"] == []
