"""One error body per API family on the plane's port (docs/api-errors.md).

Every admin API (hub, cluster, deployments, gateway admin) answers `{"detail": message}`;
the OpenAI-compatible /v1 answers `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

from functools import partial

import httpx
import pytest
import trio

from runtime.clients._base import error_detail
from runtime.plane import PlaneSettings, serve_control_plane

ADMIN = "errors-admin-key"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
TIMEOUT = 30

# One bad request per admin family: (method, path, body).
ADMIN_FAMILIES = [
    ("GET", "/api/model-usage/ranking?limit=0", None),  # hub
    ("POST", "/api/cluster/tokens", {"name": "not a name!"}),  # cluster
    ("POST", "/api/deployments", {"service": "Not A Service Id"}),  # deployments
    ("POST", "/api/gateway/tenants", ["not", "an", "object"]),  # gateway admin
]


@pytest.fixture
async def plane(nursery, tmp_path):
    settings = PlaneSettings(data_dir=tmp_path / "plane", port=0)
    handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))
    async with httpx.AsyncClient(base_url=handle.url, timeout=TIMEOUT) as client:
        yield client


def _admin_shape(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str) and body["detail"], body
    return body["detail"]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_FAMILIES)
async def test_every_admin_family_answers_a_bad_request_in_one_shape(plane, method, path, body):
    with trio.fail_after(TIMEOUT):
        bad = await plane.request(method, path, headers=AUTH, json=body)
        unauthorized = await plane.request(method, path, headers={"Authorization": "Bearer wrong"}, json=body)
    assert bad.status_code == 400, bad.text
    assert error_detail(bad) == _admin_shape(bad)  # what flowctl's clients print
    if not path.startswith("/api/model-usage"):  # a public hub route: no key needed
        assert unauthorized.status_code == 401 and unauthorized.headers["www-authenticate"] == "Bearer"
        _admin_shape(unauthorized)


async def test_v1_answers_in_openai_shape(plane):
    with trio.fail_after(TIMEOUT):
        r = await plane.post("/v1/chat/completions", headers={"Authorization": "Bearer fgk_nope"}, json={})
    assert r.status_code == 401
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "invalid_api_key"
