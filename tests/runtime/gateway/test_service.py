"""The admin API refuses out-of-range values with 400 (they used to reach SQLite and answer 500)."""

import pytest
import trio

from tests.runtime.gateway.conftest import ADMIN_AUTH

OUT_OF_RANGE = [
    ("/api/gateway/tenants", b'{"name": "big", "rpm": 100000000000000000000000000000}', "rpm"),
    ("/api/gateway/keys", b'{"tenant": "acme", "tpm": 9223372036854775808}', "tpm"),
    ("/api/gateway/keys", b'{"tenant": "acme", "expires_at": 1e400}', "expires_at"),  # inf: not JSON
    ("/api/gateway/keys", b'{"tenant": "acme", "expires_at": NaN}', "expires_at"),
    ("/api/gateway/keys", b'{"tenant": "acme", "expires_at": true}', "expires_at"),
    ("/api/gateway/keys", b'{"tenant": "acme", "models": ["echo,llama-*"]}', "models"),  # stored comma-joined
    ("/api/gateway/keys", b'{"tenant": "acme", "name": null}', "name"),
]


@pytest.mark.parametrize(("path", "body", "field"), OUT_OF_RANGE)
async def test_out_of_range_values_are_refused(cluster, path, body, field):
    await cluster.key("acme")
    with trio.fail_after(20):
        r = await cluster.client.post(path, headers={**ADMIN_AUTH, "content-type": "application/json"}, content=body)
    assert r.status_code == 400, r.text
    assert field in r.json()["detail"]


async def test_a_large_integer_expiry_is_stored_as_a_time(cluster):
    await cluster.key("acme")
    with trio.fail_after(20):
        r = await cluster.client.post("/api/gateway/keys", headers=ADMIN_AUTH,
                                      json={"tenant": "acme", "expires_at": 10**30, "rpm": 2**63 - 1})
    assert r.status_code == 201, r.text
    assert r.json()["expires_at"] == 1e30 and r.json()["rpm"] == 2**63 - 1


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("PUT", "/api/gateway/tenants", "GET, POST"), ("GET", "/api/gateway/keys/abc", "DELETE"),
    ("POST", "/api/gateway/usage", "GET")])
async def test_a_wrong_method_on_an_admin_path_is_a_405_naming_the_allowed_ones(cluster, method, path, allow):
    r = await cluster.client.request(method, path, headers=ADMIN_AUTH)
    assert r.status_code == 405 and r.headers["allow"] == allow
    assert allow in r.json()["detail"]
    missing = await cluster.client.get("/api/gateway/nothing", headers=ADMIN_AUTH)
    assert missing.status_code == 404 and "no such admin endpoint" in missing.json()["detail"]
    unauthorized = await cluster.client.request(method, path)
    assert unauthorized.status_code == 401 and unauthorized.headers["www-authenticate"] == "Bearer"
