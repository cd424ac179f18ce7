"""Request bodies on the gateway's bare ASGI paths (/v1 and the admin API): deadlines, caps, admission, JSON.

The gateway runs on a real server with a real key store; the scheduler is a stand-in with
no model deployed (what these tests are about all happens before routing).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import trio

from runtime.api import hash_key
from runtime.dispatch import Dispatcher
from runtime.dispatch.limits import Limits
from runtime.gateway import FrontDoor, Gateway
from runtime.gateway.keys import KeyStore
from runtime.gateway.service import KeyService
from runtime.http import open_test_server
from tests.polling import wait_until
from tests.runtime.http.rawhttp import open_raw_connection

ADMIN = "body-admin-key"
MAX_BODY = 200_000
BODY_TIMEOUT = 0.5
TIMEOUT = 20
CHAT = json.dumps({"model": "echo", "messages": [{"role": "user", "content": "hi"}]}).encode()
NESTED = b"[" * 50_000  # deeper than Python's recursion limit, within both body caps


class NoReplicas:
    """The scheduler as far as the gateway asks before routing: nothing is deployed."""

    def routes(self, model: str) -> list:
        return []

    def deploys(self, model: str) -> bool:
        return False

    def models(self) -> dict:
        return {}


async def not_found(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The dispatcher's fallback (and the server's lifespan partner)."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


@dataclass
class Served:
    url: str
    gateway: Gateway
    key: str
    key_id: str


@pytest.fixture
async def served(tmp_path) -> AsyncIterator[Served]:
    store = KeyStore(tmp_path / "gateway.db")
    try:
        store.create_tenant("acme")
        key, record = store.create_key("acme", limits=Limits(max_concurrency=1))
        keys = KeyService(store, hash_key(ADMIN), admin_body_timeout=BODY_TIMEOUT)
        gateway = Gateway(Dispatcher(NoReplicas()), keys.authenticate, max_body=MAX_BODY,
                          body_timeout=BODY_TIMEOUT)
        app = FrontDoor(gateway, not_found, extra=keys)
        async with open_test_server(app, unread_body_timeout=0.2) as url:
            yield Served(url, gateway, key, record.key_id)
    finally:
        store.close()


def bearer(key: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {key}")


def _message(body: bytes, admin: bool) -> str:
    """The message of an error body: the admin APIs' `detail`, /v1's OpenAI `error` (docs/api-errors.md)."""
    data = json.loads(body)
    if admin:
        assert set(data) == {"detail"}, data
        return data["detail"]
    assert data["error"]["code"] in ("request_timeout", "request_too_large", "invalid_json"), data
    return data["error"]["message"]


@pytest.mark.parametrize("admin", [False, True])
async def test_a_body_that_trickles_in_is_cut_off_with_a_408(served: Served, admin: bool) -> None:
    path, key = ("/api/gateway/tenants", ADMIN) if admin else ("/v1/chat/completions", served.key)
    with trio.fail_after(TIMEOUT):
        async with open_raw_connection(served.url) as conn:
            await conn.send_head("POST", path, [bearer(key), ("Content-Length", "100")])
            await conn.send(b'{"m')  # and nothing more: the deadline, not the client, ends it
            r = await conn.response()
            assert r.status == 408 and r.header("connection") == "close"
            assert _message(r.body, admin).startswith("the request body did not arrive within")
            assert await conn.closed_by_server()
    assert not served.gateway.limiter.active


@pytest.mark.parametrize(("admin", "length"), [(False, MAX_BODY + 1), (False, 10**18), (True, 64 * 1024 + 1)])
async def test_a_declared_length_over_the_cap_is_refused_unread(served: Served, admin: bool, length: int) -> None:
    path, key = ("/api/gateway/keys", ADMIN) if admin else ("/v1/chat/completions", served.key)
    with trio.fail_after(TIMEOUT):
        async with open_raw_connection(served.url) as conn:
            await conn.send_head("POST", path, [bearer(key), ("Content-Length", str(length))])
            r = await conn.response()  # no byte of the body sent
            assert r.status == 413 and r.header("connection") == "close"
            assert _message(r.body, admin).startswith("the request body is larger than")
            assert await conn.closed_by_server()


async def test_a_chunked_body_over_the_cap_is_refused_at_the_cap(served: Served) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_raw_connection(served.url) as conn:
            await conn.send_head("POST", "/v1/chat/completions",
                                 [bearer(served.key), ("Transfer-Encoding", "chunked")])
            chunk = b"x" * 50_000
            for _ in range(MAX_BODY // len(chunk) + 1):  # one chunk past the cap, and no end
                await conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            r = await conn.response()
            assert r.status == 413 and r.header("connection") == "close"


async def test_a_request_whose_body_is_still_arriving_holds_its_slot(served: Served) -> None:
    subject = f"key:{served.key_id}"  # the key allows one request at a time
    with trio.fail_after(TIMEOUT):
        async with open_raw_connection(served.url) as slow, httpx.AsyncClient(base_url=served.url) as client:
            await slow.send_head("POST", "/v1/chat/completions",
                                 [bearer(served.key), ("Content-Length", str(len(CHAT)))])
            await slow.send(CHAT[:5])
            await wait_until(lambda: served.gateway.limiter.active.get(subject) == 1)
            second = await client.post("/v1/chat/completions", headers=[bearer(served.key)], content=CHAT)
            assert second.status_code == 429
            assert second.json()["error"]["code"] == "concurrency_limit_exceeded"
            await slow.send(CHAT[5:])
            first = await slow.response()
            assert first.status == 404 and json.loads(first.body)["error"]["code"] == "model_not_found"
            assert subject not in served.gateway.limiter.active
            third = await client.post("/v1/chat/completions", headers=[bearer(served.key)], content=CHAT)
            assert third.status_code == 404


@pytest.mark.parametrize(("body", "reason"), [
    (NESTED, "nested too deeply"),
    (b'{"tenant": "acme", "name": "\\ud800", "model": "echo", "messages": []}', "lone UTF-16 surrogate"),
], ids=["nested", "surrogate"])
@pytest.mark.parametrize(("path", "admin"), [("/v1/chat/completions", False), ("/v1/embeddings", False),
                                             ("/api/gateway/tenants", True), ("/api/gateway/keys", True)])
async def test_hostile_json_is_a_one_line_400(served: Served, path: str, admin: bool, body: bytes,
                                              reason: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with httpx.AsyncClient(base_url=served.url) as client:
            r = await client.post(path, headers=[bearer(ADMIN if admin else served.key)], content=body)
    assert r.status_code == 400, r.text
    if not admin:
        assert r.json()["error"]["code"] == "invalid_json"
    message = _message(r.content, admin)
    assert message.startswith("the request body is not valid JSON (") and reason in message
    assert "\n" not in message


async def test_an_early_401_keeps_the_connection_when_the_body_arrives(served: Served) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_raw_connection(served.url) as conn:
            r = await conn.request("POST", "/v1/chat/completions", [bearer("fgk_wrong")], CHAT)
            assert r.status == 401 and r.header("connection") is None
            assert (await conn.request("GET", "/v1/models", [bearer(served.key)])).status == 200
            await conn.send_head("POST", "/v1/chat/completions", [("Content-Length", str(len(CHAT)))])
            await conn.send(CHAT[:5])  # the rest never comes
            r = await conn.response()
            assert r.status == 401 and r.header("connection") == "close"
            assert await conn.closed_by_server()
