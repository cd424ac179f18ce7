"""Session traffic goes through the dispatcher: a key's limits, usage and metrics hold for it (issue 13).

Against a real plane with the echo worker, sessions over real WebSockets. Each test would
fail if session traffic reached the replicas on a path of its own: the limits would not
refuse it, and usage and /metrics would not show it.
"""

from __future__ import annotations

import json
from functools import partial

import pytest
import trio
import trio_websocket

from runtime.dispatch.limits import burst_for
from tests.polling import wait_until
from tests.runtime.gateway.conftest import ADMIN_AUTH

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "one two"}]}
TOKEN_DELAY = 0.05  # the echo worker's pause before each streamed token, where a reply must last


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


async def create_session(cluster, key):
    """POST /v1/sessions with `key`: the response."""
    return await cluster.client.post("/v1/sessions", headers=bearer(key), json={"model": "echo"})


async def open_session(cluster, key):
    """A new session of `key` and a function that opens a WebSocket to it."""
    r = await create_session(cluster, key)
    assert r.status_code == 201, r.text
    created = r.json()
    port = int(cluster.url.rsplit(":", 1)[1])
    path = "/" + created["engine_url"].split("/", 3)[3] + f"?token={created['engine_token']}"
    return created, partial(trio_websocket.open_websocket, "127.0.0.1", port, path, use_ssl=False)


async def ask(ws, text):
    """Send one utterance; its last message: the whole reply (`done`) or an `error`."""
    await ws.send_message(json.dumps({"type": "text", "content": text}))
    while True:
        message = json.loads(await ws.get_message())
        if message["type"] == "error" or message.get("done"):
            return message


async def test_a_keys_rpm_holds_for_utterances_and_the_socket_stays_usable(cluster):
    # 40 requests/min: a burst of 4, then one per 1.5 s. Opening the session is the first of the 4.
    rpm = 40
    assert burst_for(rpm) == 4
    key = await cluster.key(rpm=rpm)
    with trio.fail_after(30):
        _, connect = await open_session(cluster, key)
        async with connect() as ws:
            answers = [await ask(ws, f"hello {i}") for i in range(3)]
            refused = await ask(ws, "one too many")
            await trio.sleep(refused.get("retry_after", 0))  # waiting out the window is the point here
            again = await ask(ws, "hello again")
    assert [a.get("content") for a in answers] == ["hello 0", "hello 1", "hello 2"]
    assert refused["type"] == "error" and refused["code"] == "rate_limit_exceeded", refused
    assert "40 requests/min" in refused["content"] and 1 <= refused["retry_after"] <= 2
    assert again.get("done") and again["content"] == "hello again", again


async def test_tokens_of_session_replies_are_charged_to_the_key(cluster):
    key = await cluster.key(tpm=20)
    long = " ".join(f"w{i}" for i in range(40))  # 40 tokens back: twice the key's minute
    with trio.fail_after(30):
        _, connect = await open_session(cluster, key)
        async with connect() as ws:
            reply = await ask(ws, long)
            refused = await ask(ws, "short")
        http = await cluster.client.post("/v1/chat/completions", headers=bearer(key), json=CHAT)
    assert reply.get("done") and reply["content"] == long
    assert refused["type"] == "error" and refused["code"] == "tokens_limit_exceeded", refused
    assert refused["retry_after"] >= 1
    # One bucket for the key, whichever way its calls come.
    assert http.status_code == 429 and http.json()["error"]["code"] == "tokens_limit_exceeded"


async def test_opening_sessions_counts_against_the_keys_rpm(cluster):
    key = await cluster.key(rpm=1)
    with trio.fail_after(20):
        first = await create_session(cluster, key)
        second = await create_session(cluster, key)
        listed = (await cluster.client.get("/v1/sessions", headers=bearer(key))).json()["data"]
    assert first.status_code == 201, first.text
    assert second.status_code == 429 and "1 requests/min" in second.json()["detail"], second.text
    assert [s["session_id"] for s in listed] == [first.json()["session_id"]]


async def test_a_tenants_session_cap_is_set_at_runtime_and_applies_at_once(cluster):
    key = await cluster.key("capped")
    with trio.fail_after(30):
        # The key's principal is cached (up to 30 s) by this first session; the update must not wait for that.
        assert (await create_session(cluster, key)).status_code == 201
        r = await cluster.client.patch("/api/gateway/tenants/capped", headers=ADMIN_AUTH, json={"max_sessions": 2})
        assert r.status_code == 200 and r.json()["max_sessions"] == 2, r.text
        second, third = await create_session(cluster, key), await create_session(cluster, key)
        other = await create_session(cluster, await cluster.key("other"))  # another tenant is not capped
        r = await cluster.client.patch("/api/gateway/tenants/capped", headers=ADMIN_AUTH, json={"max_sessions": None})
        assert r.status_code == 200 and r.json()["max_sessions"] is None, r.text
        fourth = await create_session(cluster, key)
    assert second.status_code == 201, second.text
    assert third.status_code == 429 and "maximum of 2 sessions" in third.json()["detail"], third.text
    assert other.status_code == 201 and fourth.status_code == 201, (other.text, fourth.text)



async def test_a_tenants_new_rate_reaches_its_open_sessions(cluster):
    key = await cluster.key("retuned")
    with trio.fail_after(30):
        _, connect = await open_session(cluster, key)
        async with connect() as ws:
            assert (await ask(ws, "before")).get("done")
            r = await cluster.client.patch("/api/gateway/tenants/retuned", headers=ADMIN_AUTH, json={"rpm": 1})
            assert r.status_code == 200, r.text
            allowed, refused = await ask(ws, "first"), await ask(ws, "second")
    assert allowed.get("done"), allowed
    assert refused["code"] == "rate_limit_exceeded" and "of this tenant" in refused["content"], refused


async def test_session_traffic_has_its_own_usage_rows_and_metrics(cluster):
    key = await cluster.key("alpha")
    with trio.fail_after(30):
        assert (await cluster.client.post("/v1/chat/completions", headers=bearer(key), json=CHAT)).status_code == 200
        _, connect = await open_session(cluster, key)
        async with connect() as ws:
            replies = [await ask(ws, "three little words") for _ in range(2)]
        usage = (await cluster.client.get("/api/gateway/usage?tenant=alpha", headers=ADMIN_AUTH)).json()
        metrics = (await cluster.client.get("/metrics", headers=ADMIN_AUTH)).text
    assert all(r.get("done") for r in replies), replies
    rows = {u["via"]: u for u in usage}
    assert sorted(rows) == ["http", "session"] and len(usage) == 2, usage
    assert (rows["http"]["requests"], rows["http"]["completion_tokens"]) == (1, 2)
    # A session's stream reports no usage: each streamed chunk counts one completion token.
    assert rows["session"]["requests"] == 2 and rows["session"]["completion_tokens"] >= 6
    assert rows["session"]["key_id"] == rows["http"]["key_id"] == key.split("_")[1]
    assert 'flowctl_gateway_requests_total{model="echo",tenant="alpha",status="200",via="session"} 2' in metrics
    assert 'flowctl_gateway_requests_total{model="echo",tenant="alpha",status="200",via="http"} 1' in metrics
    assert 'flowctl_gateway_tokens_total{model="echo",tenant="alpha",kind="completion",via="session"}' in metrics


@pytest.mark.parametrize("cluster", [{"env": {"ECHO_TOKEN_DELAY_S": str(TOKEN_DELAY)}}], indirect=True)
async def test_a_session_and_http_requests_share_the_keys_concurrency(cluster):
    key = await cluster.key(max_concurrency=1)
    long = " ".join(f"w{i}" for i in range(20))  # about 1 s of streaming
    slow_chat = {"model": "echo", "stream": True, "messages": [{"role": "user", "content": long}]}
    with trio.fail_after(60):
        _, connect = await open_session(cluster, key)
        async with connect() as ws:
            await ws.send_message(json.dumps({"type": "text", "content": long}))
            first = json.loads(await ws.get_message())  # the reply streams: it holds the key's one slot
            during = await cluster.client.post("/v1/chat/completions", headers=bearer(key), json=CHAT)
            while not (last := json.loads(await ws.get_message())).get("done"):
                assert last["type"] == "text_delta", last
            after = await cluster.client.post("/v1/chat/completions", headers=bearer(key), json=CHAT)
            # The gateway frees a slot once its handler returns, which may be just after the client has the body.
            await wait_until(lambda: not cluster.handle.dispatcher.limiter.active)
            # And the other way round: an HTTP stream holds the slot against the session.
            async with cluster.client.stream("POST", "/v1/chat/completions", headers=bearer(key),
                                             json=slow_chat) as streaming:
                assert streaming.status_code == 200
                await streaming.aiter_bytes().__anext__()
                refused = await ask(ws, "my turn")
            await wait_until(lambda: not cluster.handle.dispatcher.limiter.active)  # the stream is dropped
            final = await ask(ws, "my turn")
    assert first["type"] == "text_delta", first
    assert during.status_code == 429 and during.json()["error"]["code"] == "concurrency_limit_exceeded", during.text
    assert after.status_code == 200, after.text
    assert refused["type"] == "error" and refused["code"] == "concurrency_limit_exceeded", refused
    assert final.get("done") and final["content"] == "my turn", final
