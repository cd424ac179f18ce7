import hashlib
import os

import pytest
import trio
import trio_websocket

from runtime.tunnel import StreamReset, TunnelClosed, TunnelProtocolError, frames, open_mux
from runtime.tunnel.frames import FrameType
from tests.polling import wait_until


class MemoryTransport:
    """One end of an in-memory message connection (the tests are not about the socket)."""

    def __init__(self, send, receive):
        self._send = send
        self._receive = receive
        self.sent = []

    async def send_message(self, message):
        self.sent.append(message)
        await self._send.send(message)

    async def get_message(self):
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise trio.ClosedResourceError("peer went away") from None

    async def close(self):
        await self._send.aclose()


def transport_pair():
    a_send, b_recv = trio.open_memory_channel(64)
    b_send, a_recv = trio.open_memory_channel(64)
    return MemoryTransport(a_send, a_recv), MemoryTransport(b_send, b_recv)


async def echo_server(mux, *, task_status=trio.TASK_STATUS_IGNORED):
    """Accept streams; reply with the head's name and echo the body."""
    async with trio.open_nursery() as nursery:
        task_status.started()
        while True:
            stream = await mux.accept_stream()

            async def serve(stream):
                async with stream:
                    stream.send_head({"status": 200, "echo": stream.head.get("name")})
                    async for chunk in stream:
                        await stream.send(chunk)
                    stream.send_eof()

            nursery.start_soon(serve, stream)


async def read_all(stream):
    parts = []
    async for chunk in stream:
        parts.append(chunk)
    return b"".join(parts)


async def test_request_reply_round_trip():
    left, right = transport_pair()
    with trio.fail_after(5):
        async with open_mux(left, opener=True) as node, open_mux(right, opener=False) as plane:
            async with trio.open_nursery() as nursery:
                await nursery.start(echo_server, plane)
                stream = await node.open_stream({"name": "hello"})
                await stream.send(b"ping")
                stream.send_eof()
                assert (await stream.receive_head()) == {"status": 200, "echo": "hello"}
                assert await read_all(stream) == b"ping"
                nursery.cancel_scope.cancel()
            assert node.stream_count == 0


async def test_large_body_is_intact_with_a_small_window():
    left, right = transport_pair()
    body = os.urandom(3 * 1024 * 1024 + 17)
    with trio.fail_after(20):
        async with open_mux(left, opener=True, window=32 * 1024) as a, \
                open_mux(right, opener=False, window=32 * 1024) as b:
            async with trio.open_nursery() as nursery:
                await nursery.start(echo_server, b)
                stream = await a.open_stream({"name": "big"})

                async def upload():
                    await stream.send(body)
                    stream.send_eof()

                nursery.start_soon(upload)
                echoed = await read_all(stream)
                nursery.cancel_scope.cancel()
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(body).digest()


async def test_a_stalled_stream_does_not_block_another():
    left, right = transport_pair()
    window = 64 * 1024
    with trio.fail_after(10):
        async with open_mux(left, opener=True, window=window) as a, \
                open_mux(right, opener=False, window=window) as b:
            async with trio.open_nursery() as nursery:
                stalled = await a.open_stream({"name": "stalled"})
                fast = await a.open_stream({"name": "fast"})
                stalled_peer = await b.accept_stream()
                fast_peer = await b.accept_stream()
                sent_on_stalled = 0

                async def flood():
                    nonlocal sent_on_stalled
                    while True:
                        await stalled_peer.send(b"x" * 4096)
                        sent_on_stalled += 4096

                nursery.start_soon(flood)
                payload = os.urandom(2 * 1024 * 1024)

                async def send_fast():
                    await fast_peer.send(payload)
                    fast_peer.send_eof()

                nursery.start_soon(send_fast)
                assert await read_all(fast) == payload
                # Nobody read the stalled stream: its sender is held at one window.
                assert sent_on_stalled <= window
                assert stalled._recv_bytes <= window
                nursery.cancel_scope.cancel()


@pytest.mark.parametrize("resetting_side", ["opener", "acceptor"])
async def test_reset_reaches_the_other_side(resetting_side):
    left, right = transport_pair()
    with trio.fail_after(5):
        async with open_mux(left, opener=True) as a, open_mux(right, opener=False) as b:
            mine = await a.open_stream({"name": "r"})
            theirs = await b.accept_stream()
            resetter, victim = (mine, theirs) if resetting_side == "opener" else (theirs, mine)
            resetter.reset("client went away")
            with pytest.raises(StreamReset) as info:
                await victim.receive_some()
            assert info.value.by_peer and info.value.reason == "client went away"
            with pytest.raises(StreamReset):
                await victim.send(b"late")
            with pytest.raises(StreamReset) as info:
                await resetter.send(b"more")
            assert not info.value.by_peer


async def test_on_reset_runs_for_a_peer_reset_a_local_one_and_a_lost_connection():
    left, right = transport_pair()
    fired = []
    with trio.fail_after(5):
        async with open_mux(left, opener=True) as a, open_mux(right, opener=False) as b:
            mine = await a.open_stream({"name": "one"})
            theirs = await b.accept_stream()
            theirs.on_reset(lambda: fired.append("peer"))
            mine.on_reset(lambda: fired.append("local"))
            mine.reset("client went away")
            assert fired == ["local"]
            await wait_until(lambda: fired == ["local", "peer"])  # set by the peer mux's reader
            theirs.on_reset(lambda: fired.append("already"))  # runs at once
            assert fired[-1] == "already"
            finished = await a.open_stream({"name": "two"})
            finished.on_reset(lambda: fired.append("lost"))
        assert fired[-1] == "lost"  # the mux closed with the stream still open


async def test_leaving_a_stream_block_early_resets_it():
    left, right = transport_pair()
    with trio.fail_after(5):
        async with open_mux(left, opener=True) as a, open_mux(right, opener=False) as b:
            async with await a.open_stream({"name": "early"}) as stream:
                await stream.send(b"partial")
            peer = await b.accept_stream()
            assert await peer.receive_some() == b"partial"
            with pytest.raises(StreamReset, match="closed before the end"):
                await peer.receive_some()


async def test_control_messages_arrive_in_order():
    left, right = transport_pair()
    with trio.fail_after(5):
        async with open_mux(left, opener=True) as a, open_mux(right, opener=False) as b:
            for i in range(20):
                await a.send_control(f'{{"type": "heartbeat", "seq": {i}}}')
            got = [await b.receive_control() for _ in range(20)]
    assert got == [f'{{"type": "heartbeat", "seq": {i}}}' for i in range(20)]


class SlowTransport(MemoryTransport):
    """A socket that takes a while to write each message."""

    async def send_message(self, message):
        await trio.sleep(0.1)
        await super().send_message(message)


async def test_a_last_control_message_is_written_before_the_close(autojump_clock):
    sent, received = trio.open_memory_channel(64)
    _, nothing = trio.open_memory_channel(0)
    with trio.fail_after(5):
        async with open_mux(SlowTransport(sent, nothing), opener=False) as mux:
            await mux.send_control('{"type": "error", "message": "bye", "fatal": true}')
    assert received.receive_nowait() == '{"type": "error", "message": "bye", "fatal": true}'


async def test_lost_connection_fails_streams_and_the_mux():
    left, right = transport_pair()
    with trio.fail_after(5):
        with pytest.raises(TunnelClosed, match="connection lost"):
            async with open_mux(left, opener=True) as a:
                stream = await a.open_stream({"name": "doomed"})
                await right.close()
                with pytest.raises(TunnelClosed):
                    await stream.receive_some()
                await trio.sleep_forever()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x01", "shorter than its header"),
        (b"\x63\x00\x00\x00\x02", "unknown frame type 99"),
        (b"\x03\x00\x00\x00\x00data", "stream id 0 is reserved"),
        (frames.encode(FrameType.OPEN, 1, b"{}"), "bad id"),
        (frames.encode(FrameType.OPEN, 2, b"not json"), "not JSON"),
        (frames.encode(FrameType.OPEN, 2, b"[1]"), "not a JSON object"),
        (frames.encode(FrameType.WINDOW, 2, b"\x00"), "not 4 bytes"),
    ],
)
async def test_protocol_violations_close_the_connection(raw, message):
    left, right = transport_pair()
    with trio.fail_after(5):
        with pytest.raises(TunnelProtocolError, match=message):
            async with open_mux(left, opener=True):
                await right.send_message(raw)
                await trio.sleep_forever()


async def test_peer_that_ignores_the_window_is_cut_off():
    left, right = transport_pair()
    with trio.fail_after(5):
        with pytest.raises(TunnelProtocolError, match="exceeded the receive window"):
            async with open_mux(left, opener=True, window=1024):
                await right.send_message(frames.encode_json(FrameType.OPEN, 2, {}))
                await right.send_message(frames.encode(FrameType.DATA, 2, b"x" * 1025))
                await trio.sleep_forever()


async def test_too_many_streams_are_refused_not_queued():
    left, right = transport_pair()
    with trio.fail_after(5):
        async with open_mux(left, opener=True, max_streams=2) as a, \
                open_mux(right, opener=False, max_streams=2) as b:
            streams = [await a.open_stream({"n": i}) for i in range(3)]
            with pytest.raises(StreamReset, match="too many streams"):
                await streams[2].receive_head()
            assert b.stream_count == 2


async def test_a_flood_of_open_and_reset_is_bounded_and_never_breaks_the_mux():
    """Streams opened and reset before they are accepted wait in the accept queue: bounded."""
    left, right = transport_pair()
    with trio.fail_after(5):
        async with open_mux(left, opener=False, max_streams=4) as mux:
            for i in range(50):
                stream_id = 2 * i + 1
                await right.send_message(frames.encode_json(FrameType.OPEN, stream_id, {"n": i}))
                await right.send_message(frames.encode(FrameType.RESET, stream_id, b"gone"))
            await right.send_message("still here")
            assert await mux.receive_control() == "still here"
            refused = [m for m in left.sent if isinstance(m, bytes) and m[0] == FrameType.RESET]
            assert len(refused) == 46 and b"too many streams" in refused[0]
            # The queued ones are handed out (already reset), then new streams are welcome again.
            for _ in range(4):
                with pytest.raises(StreamReset):
                    await (await mux.accept_stream()).receive_head()
            await right.send_message(frames.encode_json(FrameType.OPEN, 201, {"n": "late"}))
            assert (await mux.accept_stream()).head == {"n": "late"}


@pytest.mark.parametrize("raw", [
    frames.encode(FrameType.OPEN, 2, b"[" * 60_000),
    frames.encode(FrameType.HEAD, 1, b"[" * 60_000),
], ids=["open", "head"])
async def test_a_deeply_nested_head_is_a_protocol_error(raw):
    left, right = transport_pair()
    with trio.fail_after(5):
        with pytest.raises(TunnelProtocolError):
            async with open_mux(left, opener=True) as mux:
                await mux.open_stream({})
                await right.send_message(raw)
                await trio.sleep_forever()


async def test_over_a_real_websocket():
    async def handler(request):
        ws = await request.accept()
        async with open_mux(ws, opener=False) as plane:
            await echo_server(plane)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            servers = await nursery.start(
                trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
            port = servers.port
            async with trio_websocket.open_websocket("127.0.0.1", port, "/", use_ssl=False) as ws:
                async with open_mux(ws, opener=True) as node:
                    replies = {}

                    async def call(i):
                        stream = await node.open_stream({"name": f"s{i}"})
                        await stream.send(b"%d" % i * 1000)
                        stream.send_eof()
                        head = await stream.receive_head()
                        replies[i] = (head["echo"], await read_all(stream))

                    async with trio.open_nursery() as calls:
                        for i in range(20):
                            calls.start_soon(call, i)
            nursery.cancel_scope.cancel()
    assert replies == {i: (f"s{i}", b"%d" % i * 1000) for i in range(20)}


async def test_frames_queued_together_leave_in_one_write_each_still_its_own_message():
    received = []
    got_all = trio.Event()

    async def handler(request):
        ws = await request.accept()
        while len(received) < 3:
            received.append(await ws.get_message())
        got_all.set()
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            servers = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
            async with trio_websocket.open_websocket("127.0.0.1", servers.port, "/", use_ssl=False) as ws:
                socket_stream = ws._stream
                writes = []
                plain_send_all = socket_stream.send_all

                async def counting_send_all(data):
                    writes.append(len(data))
                    await plain_send_all(data)

                socket_stream.send_all = counting_send_all
                async with open_mux(ws, opener=True) as node:
                    stream = await node.open_stream({"name": "x"})
                    await stream.send(b"body")
                    stream.send_eof()
                    await got_all.wait()
            nursery.cancel_scope.cancel()
    decoded = [frames.decode(m) for m in received]
    assert [f.type for f in decoded] == [FrameType.OPEN, FrameType.DATA, FrameType.END]
    assert decoded[1].payload == b"body"
    assert len(writes) == 1 + 1  # the three frames together, then the close on the way out
