"""How the clients turn transport errors and error replies into their one-line errors."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


class Scripted(BaseHTTPRequestHandler):
    """Answers every request with the server's `reply` (status, headers, body); records what came."""

    def _answer(self):
        self.server.seen.append((self.command, self.path, self.headers.get("Authorization"),
                                 self.rfile.read(int(self.headers.get("Content-Length") or 0))))
        status, headers, body = self.server.reply
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def plane():
    """A real HTTP server on 127.0.0.1 that answers with `server.reply`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    server.reply, server.seen = (200, {}, b"[]"), []
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.mark.parametrize(("reply", "detail"), [
    ({"json": {"error": {"message": "no tenant 'acme'", "type": "not_found"}}}, "no tenant 'acme'"),
    ({"json": {"detail": "unknown deployment"}}, "unknown deployment"),
    ({"text": "  plain words \n"}, "plain words"),
    ({"content": b"<h1>Bad Gateway</h1>"}, "<h1>Bad Gateway</h1>"),
    ({}, "Not Found"),
])
def test_an_error_reply_is_one_plane_error_with_its_status(plane, reply, detail):
    body = (json.dumps(reply["json"]).encode() if "json" in reply else
            reply.get("text", "").encode() or reply.get("content", b""))
    plane.reply = (404, {"Content-Type": "application/json"} if "json" in reply else {}, body)
    with GatewayAdminClient(plane.url) as client:
        with pytest.raises(PlaneError) as info:
            client.tenants()
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


def test_a_closed_port_is_unreachable_without_a_status():
    with ClusterClient("http://127.0.0.1:9", timeout=10) as plane:
        with pytest.raises(PlaneError, match="is unreachable") as info:
            plane.status()
    assert info.value.status is None


def test_the_admin_key_is_sent_as_a_bearer_token_and_bodies_as_json(plane):
    with ClusterClient(plane.url, token="k3y") as c:
        assert c.tokens() == []
        plane.reply = (201, {"Content-Type": "application/json"}, b'{"token_id": "t1"}')
        assert c.create_token("edge", ttl_s=60) == {"token_id": "t1"}
    assert [(m, p, a) for m, p, a, _ in plane.seen] == [
        ("GET", "/api/cluster/tokens", "Bearer k3y"), ("POST", "/api/cluster/tokens", "Bearer k3y")]
    assert json.loads(plane.seen[1][3]) == {"name": "edge", "ttl_s": 60}


def test_a_reply_that_is_not_json_is_a_plane_error(plane):
    plane.reply = (200, {"Content-Type": "text/html"}, b"<h1>a proxy page</h1>")
    with GatewayAdminClient(plane.url) as client:
        with pytest.raises(PlaneError, match="not JSON"):
            client.tenants()


@pytest.mark.parametrize("url", ["ftp://plane", "plane:8080", "http://"])
def test_a_url_that_is_not_http_is_refused_in_one_line(url):
    with pytest.raises(PlaneError, match="is not an http"):
        ClusterClient(url)
