"""Anonymous mode (--anonymous-tenant): requests without a key are the named tenant's, with its limits."""

import json

import pytest
import trio
import trio_websocket

from runtime.plane import anonymous_exposure
from tests.runtime.gateway.conftest import ADMIN_AUTH

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hello there friend"}]}
SEED_BODY = {"tutor_id": 1, "student_id": 2, "kb_id": "test-kb"}
ANONYMOUS = {"gateway_settings": {"anonymous_tenant": "seed"}, "session_settings": {"default_model": "echo"}}


@pytest.mark.parametrize("cluster", [ANONYMOUS], indirect=True)
async def test_a_request_without_a_key_is_the_anonymous_tenants(cluster):
    with trio.fail_after(20):
        r = await cluster.client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 200, r.text
        # Usage is counted once the reply has ended, which may be just after the client has it.
        while not (usage := (await cluster.client.get("/api/gateway/usage?tenant=seed",  # noqa: ASYNC110
                                                      headers=ADMIN_AUTH)).json()):
            await trio.sleep(0.05)
    assert [(u["tenant"], u["key_id"], u["requests"], u["via"]) for u in usage] == [("seed", "anonymous", 1, "http")]


@pytest.mark.parametrize("cluster", [ANONYMOUS], indirect=True)
@pytest.mark.parametrize("authorization", ["Bearer fgk_0000000000000000_" + "a" * 43, "Bearer sk-other", "", "Basic x"])
async def test_a_wrong_key_is_still_refused_in_anonymous_mode(cluster, authorization):
    with trio.fail_after(20):
        r = await cluster.client.post("/v1/chat/completions", headers={"Authorization": authorization}, json=CHAT)
        s = await cluster.client.post("/mgmt/v1/sessions", headers={"Authorization": authorization}, json=SEED_BODY)
    assert r.status_code == 401 and s.status_code == 401, (r.text, s.text)


@pytest.mark.parametrize("cluster", [ANONYMOUS], indirect=True)
async def test_metrics_and_the_admin_apis_are_never_anonymous(cluster):
    with trio.fail_after(20):
        for path in ("/metrics", "/api/gateway/tenants", "/api/cluster/status"):
            assert (await cluster.client.get(path)).status_code == 401, path


async def test_without_anonymous_mode_a_missing_key_is_refused(cluster):
    with trio.fail_after(20):
        r = await cluster.client.post("/v1/chat/completions", json=CHAT)
        s = await cluster.client.post("/mgmt/v1/sessions", json={"model": "echo", **SEED_BODY})
    assert r.status_code == 401 and s.status_code == 401


@pytest.mark.parametrize("cluster", [ANONYMOUS], indirect=True)
async def test_the_seeds_keyless_session_and_websocket_work(cluster):
    with trio.fail_after(30):
        r = await cluster.client.post("/mgmt/v1/sessions", json=SEED_BODY)
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["model"] == "echo" and created["kb_id"] == "test-kb"
        assert (await cluster.client.get(f"/mgmt/v1/sessions/{created['session_id']}")).status_code == 200
        port = int(cluster.url.rsplit(":", 1)[1])
        path = "/" + created["engine_url"].split("/", 3)[3] + f"?token={created['engine_token']}"
        async with trio_websocket.open_websocket("127.0.0.1", port, path, use_ssl=False) as ws:
            await ws.send_message(json.dumps({"type": "text", "content": "hi there"}))
            while (message := json.loads(await ws.get_message()))["type"] != "text":
                pass
        assert message["content"] == "hi there"
        assert (await cluster.client.delete(f"/mgmt/v1/sessions/{created['session_id']}")).status_code in (200, 204)


@pytest.mark.parametrize("cluster", [ANONYMOUS], indirect=True)
async def test_the_tenants_rpm_limit_applies_to_anonymous_requests(cluster):
    with trio.fail_after(20):
        r = await cluster.client.patch("/api/gateway/tenants/seed", headers=ADMIN_AUTH, json={"rpm": 1})
        assert r.status_code == 200, r.text
        assert (await cluster.client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        r = await cluster.client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize("cluster", [ANONYMOUS], indirect=True)
async def test_a_removed_anonymous_tenant_refuses_keyless_requests(cluster):
    with trio.fail_after(20):
        assert (await cluster.client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        assert (await cluster.client.delete("/api/gateway/tenants/seed", headers=ADMIN_AUTH)).status_code in (200, 204)
        r = await cluster.client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 401 and "seed" in r.json()["error"]["message"]


@pytest.mark.parametrize(("host", "warned"), [("127.0.0.1", False), ("::1", False), ("[::1]", False),
                                              ("localhost", False), ("127.0.0.2", False), ("0.0.0.0", True),
                                              ("::", True), ("", True), ("10.0.0.5", True), ("example.org", True)])
def test_the_start_warning_is_for_anonymous_mode_beyond_loopback(host, warned):
    assert (anonymous_exposure(host, "seed") is not None) is warned
    assert anonymous_exposure(host, None) is None
