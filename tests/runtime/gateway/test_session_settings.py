"""The plane's session and gateway settings at work on a real plane: engine_url behind proxies,
MAX_SESSIONS, SESSION_TIMEOUT_SECONDS and the first-byte timeout."""

import json

import pytest
import trio
import trio_websocket

from tests.polling import wait_until

FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "tutor.example.com"}
SEED_BODY = {"tutor_id": 1, "student_id": 2, "kb_id": "kb", "model": "echo"}


async def create(cluster, headers=None):
    key = await cluster.key()
    r = await cluster.client.post("/v1/sessions", json=SEED_BODY,
                                  headers={"Authorization": f"Bearer {key}", **(headers or {})})
    assert r.status_code == 201, r.text
    return r.json(), key


def port_of(cluster):
    return int(cluster.url.rsplit(":", 1)[1])


async def test_forwarded_headers_from_an_untrusted_peer_are_ignored(cluster):
    created, _ = await create(cluster, FORWARDED)
    assert created["engine_url"] == f"ws://127.0.0.1:{port_of(cluster)}/ws/sessions/{created['session_id']}"


@pytest.mark.parametrize("cluster", [{"session_settings": {"trusted_proxies": ("10.0.0.0/8",)}}], indirect=True)
async def test_forwarded_headers_from_a_peer_outside_the_trusted_networks_are_ignored(cluster):
    created, _ = await create(cluster, FORWARDED)
    assert created["engine_url"].startswith(f"ws://127.0.0.1:{port_of(cluster)}/ws/sessions/")


@pytest.mark.parametrize("cluster", [{"session_settings": {"trusted_proxies": ("127.0.0.0/8",)}}], indirect=True)
async def test_a_trusted_proxy_behind_tls_gets_a_wss_engine_url_that_works(cluster):
    # A proxy that appends to a client's own header: its value (the last one) counts.
    created, _ = await create(cluster, {"X-Forwarded-Proto": "http, https", "X-Forwarded-Host": "tutor.example.com"})
    assert created["engine_url"] == f"wss://tutor.example.com/ws/sessions/{created['session_id']}"
    # Without the headers, the same proxy's request gets the plane's own address.
    plain, _ = await create(cluster)
    assert plain["engine_url"].startswith(f"ws://127.0.0.1:{port_of(cluster)}/ws/sessions/")
    # Nonsense in the headers is ignored, never copied into the URL.
    odd, _ = await create(cluster, {"X-Forwarded-Proto": "gopher", "X-Forwarded-Host": "evil/path?x"})
    assert odd["engine_url"].startswith(f"ws://127.0.0.1:{port_of(cluster)}/ws/sessions/")
    # The path the proxy forwards to is the plane's: the session answers on it.
    path = "/" + created["engine_url"].split("/", 3)[3] + f"?token={created['engine_token']}"
    with trio.fail_after(20):
        async with trio_websocket.open_websocket("127.0.0.1", port_of(cluster), path, use_ssl=False) as ws:
            await ws.send_message(json.dumps({"type": "text", "content": "behind a proxy"}))
            while (message := json.loads(await ws.get_message()))["type"] != "text":
                pass
    assert message["content"] == "behind a proxy"


@pytest.mark.parametrize("cluster", [{"session_settings": {"trusted_proxies": ("127.0.0.1",),
                                                           "public_ws_url": "wss://public.example/tutor"}}],
                         indirect=True)
async def test_a_configured_public_url_wins_over_forwarded_headers(cluster):
    created, _ = await create(cluster, FORWARDED)
    assert created["engine_url"] == f"wss://public.example/tutor/ws/sessions/{created['session_id']}"


@pytest.mark.parametrize("cluster", [{"session_settings": {"max_sessions": 2}}], indirect=True)
async def test_max_sessions_caps_the_plane_and_shows_in_health(cluster):
    assert (await cluster.client.get("/health")).json()["max_sessions"] == 2
    await create(cluster)
    await create(cluster)
    key = await cluster.key()
    r = await cluster.client.post("/v1/sessions", json=SEED_BODY, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 503 and "maximum number of sessions (2)" in r.json()["detail"]


@pytest.mark.parametrize("cluster", [{"session_settings": {"idle_timeout": 0.4}}], indirect=True)
async def test_session_timeout_closes_an_idle_session(cluster):
    created, key = await create(cluster)
    url = f"/v1/sessions/{created['session_id']}"
    headers = {"Authorization": f"Bearer {key}"}
    statuses = []

    async def gone():
        statuses.append((await cluster.client.get(url, headers=headers)).status_code)
        return statuses[-1] == 404

    with trio.fail_after(10):
        while not await gone():  # noqa: ASYNC110 - the state lives in the plane, read over HTTP
            await trio.sleep(0.05)
    assert statuses[0] == 200


@pytest.mark.parametrize("cluster", [{"gateway_settings": {"first_byte_timeout": 0.3}}], indirect=True)
async def test_the_first_byte_timeout_setting_answers_504(cluster):
    key = await cluster.key()
    slow = {"model": "echo", "messages": [{"role": "user", "content": "a b c d"}], "echo_delay_s": 0.5}
    with trio.fail_after(20):
        r = await cluster.client.post("/v1/chat/completions", json=slow, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 504 and "0.3 s" in r.json()["error"]["message"]
        await wait_until(lambda: not cluster.handle.dispatcher.router.by_node)
