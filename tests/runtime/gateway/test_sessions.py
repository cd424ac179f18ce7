"""Sessions on the real control plane: behind the gateway's API keys, through the tunnel to echo."""

import json

import trio
import trio_websocket


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
            while "delta" in (message := json.loads(await ws.get_message())):
                pass
        assert message["content"] == "hi there" and message["done"]
        r = await client.delete(f"/v1/sessions/{created['session_id']}", headers=bearer(acme))
        assert r.status_code == 204
        assert (await client.get("/health")).json()["active_sessions"] == 0
