"""Sessions on the real control plane: behind the gateway's API keys, through the tunnel to echo."""

import json
from functools import partial

import pytest
import trio
import trio_websocket

from runtime.gateway.keys import parse_key
from runtime.plane import SERVICE_NAME
from tests.polling import wait_until
from tests.runtime.gateway.conftest import ADMIN_AUTH


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


async def test_sessions_use_the_gateways_keys_and_tenants(cluster):
    await cluster.deploy()
    acme, other = await cluster.key("acme"), await cluster.key("other")
    client = cluster.client
    with trio.fail_after(30):
        assert (await client.post("/v1/sessions", json={"model": "echo"})).status_code == 401
        r = await client.post("/v1/sessions", headers=bearer(acme), json={"model": "echo", "metadata": {"tutor_id": 3}})
        assert r.status_code == 201, r.text
        created = r.json()
        assert (await client.get(f"/v1/sessions/{created['session_id']}", headers=bearer(other))).status_code == 404
        health = (await client.get("/health")).json()
        assert health["active_sessions"] == 1 and health["max_sessions"] >= 1

        port = int(cluster.url.rsplit(":", 1)[1])
        path = "/" + created["engine_url"].split("/", 3)[3] + f"?token={created['engine_token']}"
        async with trio_websocket.open_websocket("127.0.0.1", port, path, use_ssl=False) as ws:
            await ws.send_message(json.dumps({"type": "text", "content": "hi there"}))
            while (message := json.loads(await ws.get_message()))["type"] == "text_delta":
                pass
        assert message["content"] == "hi there" and message["done"]
        r = await client.delete(f"/v1/sessions/{created['session_id']}", headers=bearer(acme))
        assert r.status_code == 204
        assert (await client.get("/health")).json()["active_sessions"] == 0


async def _open_session(cluster, key):
    r = await cluster.client.post("/v1/sessions", headers=bearer(key), json={"model": "echo"})
    assert r.status_code == 201, r.text
    created = r.json()
    port = int(cluster.url.rsplit(":", 1)[1])
    path = "/" + created["engine_url"].split("/", 3)[3] + f"?token={created['engine_token']}"
    return created, partial(trio_websocket.open_websocket, "127.0.0.1", port, path, use_ssl=False)


async def _ending(ws):
    """The session's last message on `ws` and the close that follows it."""
    message = json.loads(await ws.get_message())
    with pytest.raises(trio_websocket.ConnectionClosed) as info:
        await ws.get_message()
    return message, info.value.reason


def _told(ending, reason):
    message, close = ending
    assert message["type"] == "error" and reason in message["content"]
    assert close.code == 4000 and reason in close.reason


async def _refused(connect):
    try:
        async with connect():
            pass
    except trio_websocket.ConnectionRejected as exc:
        return exc.status_code
    return None


async def test_revoking_a_key_or_removing_a_tenant_ends_its_sessions(cluster):
    first, second = await cluster.key("acme"), await cluster.key("acme")
    client = cluster.client
    ended = {}
    # Results are checked outside the socket blocks: trio-websocket can end a block early.
    with trio.fail_after(30):
        _, connect_first = await _open_session(cluster, first)
        _, connect_second = await _open_session(cluster, second)
        async with connect_first() as ws:
            r = await client.delete(f"/api/gateway/keys/{parse_key(first)[0]}", headers=ADMIN_AUTH)
            assert r.status_code == 204
            ended["key"] = await _ending(ws)
        _told(ended["key"], "revoked")
        assert await _refused(connect_first) == 403
        assert (await client.get("/health")).json()["active_sessions"] == 1  # its slot is free

        async with connect_second() as ws:  # the tenant's other key's session lives on
            await ws.send_message(json.dumps({"type": "text", "content": "still here"}))
            while (message := json.loads(await ws.get_message()))["type"] == "text_delta":
                pass
            assert message["content"] == "still here"
            assert (await client.delete("/api/gateway/tenants/acme", headers=ADMIN_AUTH)).status_code == 204
            ended["tenant"] = await _ending(ws)
        _told(ended["tenant"], "tenant 'acme' was removed")
        assert await _refused(connect_second) == 403
        assert (await client.get("/health")).json()["active_sessions"] == 0


async def test_a_seed_client_sees_one_whole_text_message_per_reply(cluster):
    """Seed 002's frontend renders every `text` message's `content`: streamed pieces must not be `text`."""
    await cluster.deploy()
    key = await cluster.key("acme")
    with trio.fail_after(30):
        _, connect = await _open_session(cluster, key)
        async with connect() as ws:
            await ws.send_message(json.dumps({"type": "text", "content": "hello seed client"}))
            messages = []
            while not (message := json.loads(await ws.get_message())).get("done"):
                messages.append(message)
            messages.append(message)
    texts = [m for m in messages if m["type"] == "text"]
    assert texts == [message] and message["content"] == "hello seed client", messages
    assert message["role"] == "assistant" and message["timestamp"]
    deltas = [m for m in messages if m["type"] == "text_delta"]
    assert deltas and "".join(m["delta"] for m in deltas) == message["content"]
    assert all(m["role"] == "assistant" and m["utterance_id"] == message["utterance_id"] and m["timestamp"]
               for m in deltas)


async def test_health_carries_the_seeds_fields_beside_flowctls(cluster):
    health = (await cluster.client.get("/health")).json()
    # Seed 002's /health: {"status": "healthy", "service", "active_sessions", "max_sessions"}.
    assert health["status"] == "healthy" and health["service"] == SERVICE_NAME
    assert health["active_sessions"] == 0 and health["max_sessions"] >= 1
    assert set(health["roles"]) == {"hub", "scheduler", "gateway"} and health["roles"]["gateway"]["in_flight"] == 0


TWO_MODELS = ("echo", "echo-b")  # one worker serving both
SEED_BODY = {"tutor_id": 1, "student_id": 2, "kb_id": "test-kb"}


@pytest.mark.parametrize("cluster", [{"node_models": TWO_MODELS, "session_settings": {"default_model": "echo-b"}}],
                         indirect=True)
async def test_the_seeds_create_body_gets_the_default_model(cluster):
    key = await cluster.key("acme")
    with trio.fail_after(30):
        await wait_until(lambda: len(cluster.handle.scheduler.models()) == 2)
        r = await cluster.client.post("/v1/sessions", headers=bearer(key), json=SEED_BODY)
        assert r.status_code == 201, r.text
        created = r.json()
        shown = (await cluster.client.get(f"/v1/sessions/{created['session_id']}", headers=bearer(key))).json()
        named = await cluster.client.post("/v1/sessions", headers=bearer(key), json={"model": "echo", **SEED_BODY})
    for body in (created, shown):
        assert body["model"] == "echo-b" and body["metadata"] == SEED_BODY
        assert (body["tutor_id"], body["student_id"], body["kb_id"]) == (1, 2, "test-kb")
    assert named.status_code == 201 and named.json()["model"] == "echo", named.text


@pytest.mark.parametrize("cluster", [{"node_models": TWO_MODELS}], indirect=True)
async def test_without_a_default_model_the_seeds_body_is_told_how_to_set_one(cluster):
    key = await cluster.key("acme")
    with trio.fail_after(30):
        await wait_until(lambda: len(cluster.handle.scheduler.models()) == 2)
        r = await cluster.client.post("/v1/sessions", headers=bearer(key), json=SEED_BODY)
    assert r.status_code == 400 and "--default-model" in r.json()["detail"], r.text


async def test_the_admin_key_lists_every_tenants_sessions(cluster):
    acme, other = await cluster.key("acme"), await cluster.key("other")
    client = cluster.client
    with trio.fail_after(30):
        mine = (await client.post("/v1/sessions", headers=bearer(acme), json={"model": "echo"})).json()
        theirs = (await client.post("/v1/sessions", headers=bearer(other), json=SEED_BODY)).json()
        listed = {path: (await client.get(path, headers=ADMIN_AUTH)) for path in ("/v1/sessions", "/mgmt/v1/sessions")}
        own = (await client.get("/v1/sessions", headers=bearer(acme))).json()
    for r in listed.values():
        assert r.status_code == 200, r.text
        body = r.json()
        assert {(s["session_id"], s["tenant"]) for s in body["data"]} == {
            (mine["session_id"], "acme"), (theirs["session_id"], "other")}
        assert body["active_sessions"] == 2 and "engine_token" not in r.text
    assert [s["session_id"] for s in own["data"]] == [mine["session_id"]]
