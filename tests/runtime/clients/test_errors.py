"""How the clients turn transport errors and error replies into their one-line errors."""

import httpx
import pytest
import trio

from runtime.clients import (
    ClusterClient,
    GatewayAdminClient,
    HubClient,
    HubRequestFailed,
    PlaneError,
)


def replying(status, **body):
    return httpx.MockTransport(lambda request: httpx.Response(status, **body))


@pytest.mark.parametrize(("reply", "detail"), [
    ({"json": {"error": {"message": "no tenant 'acme'", "type": "not_found"}}}, "no tenant 'acme'"),
    ({"json": {"detail": "unknown deployment"}}, "unknown deployment"),
    ({"text": "  plain words \n"}, "plain words"),
    ({"content": b"<h1>Bad Gateway</h1>"}, "<h1>Bad Gateway</h1>"),
    ({}, "Not Found"),
])
async def test_an_error_reply_is_one_plane_error_with_its_status(reply, detail):
    with trio.fail_after(10):
        async with GatewayAdminClient("http://plane", transport=replying(404, **reply)) as client:
            with pytest.raises(PlaneError) as info:
                await client.tenants()
    assert info.value.status == 404
    assert str(info.value) == f"{detail} (HTTP 404)"


async def test_the_hub_names_method_url_and_status():
    with trio.fail_after(10):
        async with HubClient("http://hub/", transport=replying(409, json={"detail": "taken"})) as hub:
            with pytest.raises(HubRequestFailed) as info:
                await hub.set_flag("echo", "1.0.0", "stable")
    err = info.value
    assert (err.method, err.url, err.status, err.detail) == (
        "POST", "http://hub/api/services/echo/1.0.0/stable", 409, "taken")


async def test_a_missing_signature_is_none_and_a_missing_manifest_names_the_version():
    with trio.fail_after(10):
        async with HubClient("http://hub", transport=replying(404, json={"detail": "no"})) as hub:
            assert await hub.fetch_signature("echo", "1.0.0") is None
            with pytest.raises(HubRequestFailed, match=r"echo@1\.0\.0 is not on the hub"):
                await hub.fetch_manifest("echo", "1.0.0")


async def test_a_closed_port_is_unreachable_without_a_status():
    with trio.fail_after(10):
        async with ClusterClient("http://127.0.0.1:9") as plane:
            with pytest.raises(PlaneError, match="is unreachable") as info:
                await plane.status()
    assert info.value.status is None


async def test_the_admin_key_is_sent_as_a_bearer_token():
    seen = []

    def handler(request):
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json=[])

    with trio.fail_after(10):
        async with ClusterClient("http://plane", token="k3y", transport=httpx.MockTransport(handler)) as c:
            assert await c.tokens() == []
    assert seen == ["Bearer k3y"]
