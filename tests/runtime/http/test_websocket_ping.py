"""serve_app pings WebSocket clients, so a dead peer is found by the kernel's stall timeout."""

import base64
import os

import trio
from quart import websocket
from quart_trio import QuartTrio

from runtime.http import open_test_server


async def test_idle_websockets_are_pinged():
    app = QuartTrio("ping")

    @app.websocket("/ws")
    async def ws():
        await websocket.accept()
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with open_test_server(app, websocket_ping_interval=0.2) as url:
            port = int(url.rsplit(":", 1)[1])
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                key = base64.b64encode(os.urandom(16)).decode()
                await stream.send_all((
                    f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
                received = b""
                while b"\r\n\r\n" not in received:
                    received += await stream.receive_some()
                head, _, frames = received.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 101")
                # Nothing is sent by the client; the server's first frame is a ping (FIN + opcode 9).
                while not frames:
                    frames += await stream.receive_some()
                assert frames[0] == 0x89
