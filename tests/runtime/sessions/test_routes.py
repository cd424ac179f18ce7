"""Session API + WebSocket over real HTTP, through the tunnel to the real echo worker."""

import json
from contextlib import AsyncExitStack
from functools import partial

import httpx
import pytest
import trio
import trio_websocket
from quart_trio import QuartTrio

from runtime.dispatch import Dispatcher
from runtime.dispatch.limits import Principal
from runtime.http import open_test_server
from runtime.node.agent import AgentConfig, run_agent
from runtime.scheduler.service import Scheduler
from runtime.scheduler.store import ClusterStore
from runtime.sessions import routes
from runtime.sessions.backend import ClusterBackend
from runtime.sessions.manager import DEFAULT_MAX_SOCKETS, SessionError, SessionManager
from tests.examples.workers import EXAMPLES, spawn_worker
from tests.polling import wait_until
from tests.runtime.scheduler.test_cluster import FakeExecutor, resolve

KEYS = {"Bearer key-a": "tenant-a", "Bearer key-b": "tenant-b"}


async def authenticate(header):
    try:
        return Principal(KEYS[header], key_id=header)
    except KeyError:
        raise SessionError(401, "a valid API key is required") from None


@pytest.fixture
async def gateway(nursery, tmp_path, request):
    env = getattr(request, "param", None)
    worker = await trio.to_thread.run_sync(partial(spawn_worker, EXAMPLES / "echo", env=env))
    store = ClusterStore(tmp_path / "cluster.db")
    scheduler = Scheduler(store, resolve, hub_url="http://127.0.0.1:1", heartbeat_interval=0.5)
    manager = SessionManager(max_sessions=3, max_per_tenant=2)
    app = QuartTrio("test")
    routes.register(app, manager, ClusterBackend(Dispatcher(scheduler)), scheduler, authenticate=authenticate)

    from runtime.scheduler import routes as cluster_routes

    cluster_routes.register(app, scheduler, admin_key_hash="0" * 64, version="t", roles=("scheduler",))
    try:
        async with open_test_server(app) as url:
            await nursery.start(scheduler.run)
            _, token = store.create_token("n")
            await nursery.start(run_agent, AgentConfig(url=url, token=token, node_id="n1", name="n1"),
                                FakeExecutor(worker.url))
            await scheduler.deploy("echo", replicas=1)
            with trio.fail_after(10):
                await wait_until(lambda: scheduler.routes("echo"))
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                client.url, client.manager, client.worker_url = url, manager, worker.url
                yield client
    finally:
        with trio.CancelScope(shield=True):  # a failing test may leave this scope cancelled
            await trio.to_thread.run_sync(worker.stop)
        store.close()


def ws_path(engine_url):
    return engine_url.split("/", 3)[3]


async def open_socket(client, created):
    port = int(client.url.rsplit(":", 1)[1])
    return trio_websocket.open_websocket("127.0.0.1", port, "/" + ws_path(created["engine_url"])
                                         + f"?token={created['engine_token']}", use_ssl=False)


async def test_create_talk_cancel_and_delete(gateway):
    with trio.fail_after(30):
        r = await gateway.post("/v1/sessions", headers={"Authorization": "Bearer key-a"},
                               json={"model": "echo", "system_prompt": "be kind", "metadata": {"tutor_id": 7}})
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["status"] == "active" and created["engine_url"].startswith("ws://")
        assert created["tutor_id"] == 7 and created["engine_token"]

        async with await open_socket(gateway, created) as ws:
            await ws.send_message(json.dumps({"type": "text", "content": "hello world"}))
            deltas = []
            while (message := json.loads(await ws.get_message()))["type"] == "text_delta":
                deltas.append(message["delta"])
            assert message["content"] == "hello world" and "".join(deltas) == "hello world"

        info = (await gateway.get(f"/v1/sessions/{created['session_id']}",
                                  headers={"Authorization": "Bearer key-a"})).json()
        assert info["node_id"] == "n1" and info["replica_id"] and "engine_token" not in info
        r = await gateway.delete(f"/v1/sessions/{created['session_id']}", headers={"Authorization": "Bearer key-a"})
        assert r.status_code == 204


async def test_tenants_are_isolated_and_limits_apply(gateway):
    a = {"Authorization": "Bearer key-a"}
    b = {"Authorization": "Bearer key-b"}
    mine = (await gateway.post("/v1/sessions", headers=a, json={"model": "echo"})).json()
    for method, path in (("GET", f"/v1/sessions/{mine['session_id']}"),
                         ("DELETE", f"/v1/sessions/{mine['session_id']}"),
                         ("GET", f"/mgmt/v1/sessions/{mine['session_id']}")):
        r = await gateway.request(method, path, headers=b)
        assert r.status_code == 404, (method, path)
    assert (await gateway.get("/v1/sessions", headers=b)).json()["data"] == []
    assert len((await gateway.get("/v1/sessions", headers=a)).json()["data"]) == 1
    # The seed's path and body (no model: the only ready one is used).
    r = await gateway.post("/mgmt/v1/sessions", headers=a, json={"tutor_id": 1, "student_id": 2})
    assert r.status_code == 201 and r.json()["student_id"] == 2
    r = await gateway.post("/v1/sessions", headers=a, json={"model": "echo"})
    assert r.status_code == 429 and "maximum of 2" in r.json()["detail"]
    await gateway.post("/v1/sessions", headers=b, json={"model": "echo"})
    r = await gateway.post("/v1/sessions", headers=b, json={"model": "echo"})
    assert r.status_code == 503 and "maximum number of sessions (3)" in r.json()["detail"]


@pytest.mark.parametrize(
    ("headers", "body", "status", "detail"),
    [
        ({}, {"model": "echo"}, 401, "API key"),
        ({"Authorization": "Bearer key-a"}, {"model": "nope"}, 404, "no ready replica serves model 'nope'"),
        ({"Authorization": "Bearer key-a"}, {"model": "bad model\r\nX: y"}, 400, "not a model id"),
        ({"Authorization": "Bearer key-a"}, {"model": "echo", "metadata": [1]}, 400, "metadata"),
        ({"Authorization": "Bearer key-a"}, {"model": "echo", "system_prompt": 5}, 400, "system_prompt"),
    ],
)
async def test_bad_session_requests(gateway, headers, body, status, detail):
    r = await gateway.post("/v1/sessions", headers=headers, json=body)
    assert r.status_code == status and detail in r.json()["detail"]


async def test_a_speech_model_not_ready_is_a_warning_and_audio_gets_an_error(gateway):
    r = await gateway.post("/v1/sessions", headers={"Authorization": "Bearer key-a"},
                           json={"model": "echo", "asr_model": "whisper"})
    assert r.status_code == 201 and r.json()["warnings"] == [
        "no ready replica serves asr_model 'whisper' now: audio messages get an error until one does"]


async def test_a_wrong_token_is_refused_before_the_upgrade(gateway):
    created = (await gateway.post("/v1/sessions", headers={"Authorization": "Bearer key-a"},
                                  json={"model": "echo"})).json()
    other = (await gateway.post("/v1/sessions", headers={"Authorization": "Bearer key-a"},
                                json={"model": "echo"})).json()
    created["engine_token"] = other["engine_token"]  # a valid token, for another session
    with trio.fail_after(10), pytest.raises(trio_websocket.ConnectionRejected) as info:
        async with await open_socket(gateway, created):
            pass
    assert info.value.status_code == 403


@pytest.mark.parametrize("gateway", [{"ECHO_TOKEN_DELAY_S": "0.05"}], indirect=True)
async def test_cancel_stops_generation_on_the_worker(gateway):
    created = (await gateway.post("/v1/sessions", headers={"Authorization": "Bearer key-a"},
                                  json={"model": "echo"})).json()
    with trio.fail_after(30):
        async with await open_socket(gateway, created) as ws:
            await ws.send_message(json.dumps({"type": "text", "content": "word " * 400}))
            assert json.loads(await ws.get_message())["type"] == "text_delta"
            async with httpx.AsyncClient(base_url=gateway.worker_url) as worker:
                assert (await worker.get("/health")).json()["active_requests"] == 1
                await ws.send_message(json.dumps({"type": "cancel"}))
                while not json.loads(await ws.get_message()).get("cancelled"):
                    pass
                with trio.fail_after(1):  # the worker sees the cancellation within a second
                    while (await worker.get("/health")).json()["active_requests"]:  # noqa: ASYNC110
                        await trio.sleep(0.02)


@pytest.mark.parametrize("path", ["/v1/sessions", "/mgmt/v1/sessions"])
async def test_deeply_nested_json_is_a_400(gateway, path):
    with trio.fail_after(10):
        r = await gateway.post(path, headers={"Authorization": "Bearer key-a", "Content-Type": "application/json"},
                               content=b"[" * 100_000)
        assert r.status_code == 400 and r.json()["detail"] == "the request body is nested too deeply"
        r = await gateway.post(path, headers={"Authorization": "Bearer key-a"}, content=b"{nope")
        assert r.status_code == 400 and r.json()["detail"] == "the request body is not valid JSON"


async def test_a_session_takes_a_few_sockets_and_refuses_more_before_the_upgrade(gateway):
    created = (await gateway.post("/v1/sessions", headers={"Authorization": "Bearer key-a"},
                                  json={"model": "echo"})).json()
    session = gateway.manager.get(created["session_id"], "tenant-a")
    refused = None
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            for _ in range(DEFAULT_MAX_SOCKETS):
                await stack.enter_async_context(await open_socket(gateway, created))
            try:
                async with await open_socket(gateway, created):
                    pass
            except trio_websocket.ConnectionRejected as exc:
                refused = exc
        # Checked out here: trio-websocket can end a block early when a socket closes under it.
        assert refused is not None and refused.status_code == 429 and b"WebSockets open" in refused.body
        await wait_until(lambda: session.connections == 0)
        async with await open_socket(gateway, created) as ws:  # the slots are free again
            await ws.send_message(json.dumps({"type": "text", "content": "hi"}))
            while (message := json.loads(await ws.get_message()))["type"] == "text_delta":
                pass
    assert message["content"] == "hi"


async def test_a_bad_frame_gets_an_error_and_the_socket_stays_usable(gateway):
    created = (await gateway.post("/v1/sessions", headers={"Authorization": "Bearer key-a"},
                                  json={"model": "echo"})).json()
    with trio.fail_after(30):
        async with await open_socket(gateway, created) as ws:
            for frame, problem in (('{"type": "text", "content": "\\ud800"}', "lone surrogate"),
                                   ("[" * 100_000, "nested too deeply")):
                await ws.send_message(frame)
                message = json.loads(await ws.get_message())
                assert message["type"] == "error" and problem in message["content"]
            await ws.send_message(json.dumps({"type": "text", "content": "fine"}))
            while (message := json.loads(await ws.get_message()))["type"] == "text_delta":
                pass
            assert message["content"] == "fine"
