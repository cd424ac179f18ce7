"""Seed 002's own clients, unmodified, against a real `flowctl up` (only the host and port changed).

The plane runs with --anonymous-tenant (the seed has no API keys), a default model (the
seed's create body names none) and the seed's own MAX_SESSIONS variable. The requests and
WebSocket messages below are the ones in seed 002's README: its curl calls, its test
scripts (health, create, query, delete, list, the max-sessions loop), wscat and the
browser client, which renders each `text` message's `content`.
"""

import base64
import json

import httpx
import trio
import trio_websocket

from packer import pack_dir
from tests.flowctl.test_up import ECHO, cli, cluster, until  # noqa: F401 - cluster is a fixture

SEED_BODY = {"tutor_id": 1, "student_id": 1, "kb_id": "test-kb"}
MAX_SESSIONS = 3


def socket_path(engine_url, token):
    """What the seed's clients open: `${engine_url}?token=${engine_token}`, as host, port and path."""
    rest = engine_url.split("://", 1)[1]
    host_port, path = rest.split("/", 1)
    host, port = host_port.rsplit(":", 1)
    return host, int(port), f"/{path}?token={token}"


async def converse(engine_url, token, messages):
    """Send the seed's messages one by one; collect what the server says until each reply's `text`."""
    host, port, path = socket_path(engine_url, token)
    seen = []
    async with trio_websocket.open_websocket(host, port, path, use_ssl=False) as ws:
        for message in messages:
            await ws.send_message(json.dumps(message))
            while True:
                answer = json.loads(await ws.get_message())
                seen.append(answer)
                if answer["type"] in ("text", "error"):
                    break
    return seen


async def test_seed_002_clients_run_unmodified_against_flowctl_up(cluster, tmp_path, monkeypatch):  # noqa: F811
    port, start = cluster
    base = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MAX_SESSIONS", str(MAX_SESSIONS))  # the seed's .env, read as it is
    bundle = pack_dir(ECHO, tmp_path / "dist")
    with trio.fail_after(120):
        await start("plane", "--data-dir", str(tmp_path / "plane"), "--anonymous-tenant", "seed",
                    "--default-model", "echo")
        await until(lambda s: [n["state"] for n in s["nodes"]] == ["ready"], port)
        code, _, err = await cli("publish", str(bundle.path), "--hub", base, port=port)
        assert code == 0, err
        code, _, err = await cli("deploy", "echo", port=port)
        assert code == 0, err
        await until(lambda s: s["models"] and s["models"][0]["model"] == "echo", port)

        async with httpx.AsyncClient(base_url=base, timeout=30) as client:  # no key, as the seed's clients
            health = (await client.get("/health")).json()
            assert health["status"] == "healthy" and health["service"]
            assert (health["active_sessions"], health["max_sessions"]) == (0, MAX_SESSIONS)

            # curl -X POST .../v1/sessions and .../mgmt/v1/sessions with the seed's body.
            r = await client.post("/v1/sessions", json=SEED_BODY, headers={"Content-Type": "application/json"})
            assert r.status_code == 201, r.text
            created = r.json()
            assert {"session_id", "engine_url", "engine_token", "status"} <= set(created)
            assert created["status"] == "active"
            assert created["engine_url"].startswith(f"ws://127.0.0.1:{port}/")
            seed_path = await client.post("/mgmt/v1/sessions", json={"tutor_id": 2, "student_id": 5})
            assert seed_path.status_code == 201, seed_path.text

            # GET /v1/sessions/{id}: the seed's fields.
            one = (await client.get(f"/v1/sessions/{created['session_id']}")).json()
            assert (one["tutor_id"], one["student_id"], one["kb_id"], one["status"]) == (1, 1, "test-kb", "active")
            assert one["created_at"] and one["last_activity"]
            listed = (await client.get("/v1/sessions")).json()
            assert {s["session_id"] for s in listed["data"]} == {created["session_id"],
                                                                 seed_path.json()["session_id"]}

            # wscat -c "${ENGINE_URL}?token=${TOKEN}", then > {"type": "text", "content": "你好"}.
            seen = await converse(created["engine_url"], created["engine_token"], [
                {"type": "text", "content": "你好"},
                {"type": "text", "content": "what is python"},
                {"type": "audio", "data": base64.b64encode(b"RIFF....WAVE").decode()},  # no ASR model deployed
                {"type": "video"},  # the seed's test_websocket.py sends an invalid type
            ])
            texts = [m for m in seen if m["type"] == "text"]
            # The browser client shows each `text` message's content: one whole reply per utterance.
            assert [m["content"] for m in texts] == ["你好", "what is python"]
            assert all(m["role"] == "assistant" and m["timestamp"] for m in texts)
            errors = [m for m in seen if m["type"] == "error"]
            assert len(errors) == 2 and all(m["content"] and m["timestamp"] for m in errors)
            assert "ASR" in errors[0]["content"] and "video" in errors[1]["content"]

            # The seed's unified path /ws/ws/{id} serves the same session.
            seed_url = created["engine_url"].replace("/ws/sessions/", "/ws/ws/")
            again = await converse(seed_url, created["engine_token"], [{"type": "text", "content": "again"}])
            assert again[-1]["type"] == "text" and again[-1]["content"] == "again"

            # A wrong engine token is refused before the upgrade.
            try:
                await converse(created["engine_url"], "wrong-token", [{"type": "text", "content": "x"}])
                raise AssertionError("a wrong token was accepted")
            except trio_websocket.ConnectionRejected as exc:
                assert exc.status_code == 403

            # The seed's max-sessions loop: 201 until the cap, then 503 with a detail.
            statuses = []
            for i in range(MAX_SESSIONS + 1):
                r = await client.post("/v1/sessions", json={"tutor_id": 1, "student_id": i + 1})
                statuses.append(r.status_code)
                if r.status_code == 503:
                    assert "maximum number of sessions" in r.json()["detail"]
                    break
            assert statuses == [201, 503]  # two were open already

            # DELETE answers 204 No Content; the session is gone.
            r = await client.delete(f"/v1/sessions/{created['session_id']}")
            assert r.status_code == 204 and r.content == b""
            assert (await client.get(f"/v1/sessions/{created['session_id']}")).status_code == 404

            # "API 文档: http://localhost:9000/docs": the interactive explorer, and the description it reads.
            assert "openapi.json" in (await client.get("/docs")).text
            assert "/mgmt/v1/sessions" in (await client.get("/openapi.json")).json()["paths"]
