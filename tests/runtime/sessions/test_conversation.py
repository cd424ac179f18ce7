"""The session WebSocket protocol over a real trio-websocket connection, with a stand-in model."""

import base64
import contextlib
import json
from functools import partial

import pytest
import trio
import trio.lowlevel
import trio_websocket

from runtime.sessions.backend import BackendError
from runtime.sessions.conversation import serve_session
from runtime.sessions.manager import SessionManager


class FakeBackend:
    """Answers with the words of the question, one per delta; can fail or stall on demand."""

    def __init__(self):
        self.fail_before_output = 0
        self.stall = False
        self.explode = None  # an exception to raise after the first delta
        self.cancelled = trio.Event()
        self.seen = []
        self.generating = self.most_at_once = 0

    async def stream_chat(self, session, messages):
        self.seen.append(messages)
        if self.fail_before_output:
            self.fail_before_output -= 1
            raise BackendError("replica gone")
        self.generating += 1
        self.most_at_once = max(self.most_at_once, self.generating)
        try:
            for word in messages[-1]["content"].split():
                yield word + " "
                await trio.lowlevel.checkpoint()
                if self.explode is not None:
                    raise self.explode
            while self.stall:
                yield "."
                await trio.sleep(0.01)
        except BaseException:
            self.cancelled.set()
            raise
        finally:
            self.generating -= 1

    async def transcribe(self, session, audio, fmt):
        if not session.asr_model:
            raise BackendError("this session has no ASR model")
        return audio.decode()

    async def speak(self, session, text):
        return text.encode()[::-1]

    def turn(self, session):
        return contextlib.nullcontext()


class TrioSocket:
    def __init__(self, ws):
        self.ws = ws

    async def send(self, text):
        await self.ws.send_message(text)

    async def receive(self):
        try:
            return await self.ws.get_message()
        except trio_websocket.ConnectionClosed:
            return None

    async def close(self, code, reason):
        await self.ws.aclose(code, reason)


@pytest.fixture
async def harness(nursery):
    manager = SessionManager()
    backend = FakeBackend()

    async def handler(request):
        session = manager.authenticate(request.path.rsplit("/", 1)[1], "t")
        ws = await request.accept()
        await serve_session(session, TrioSocket(ws), backend, max_message_bytes=64 * 1024)

    server = await nursery.start(partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None))

    async def connect(session):
        session.token = "t"
        return trio_websocket.open_websocket("127.0.0.1", server.port, f"/ws/{session.session_id}",
                                             use_ssl=False)

    return manager, backend, connect


async def receive(ws):
    return json.loads(await ws.get_message())


async def send(ws, **message):
    await ws.send_message(json.dumps(message))


async def reply_of(ws):
    deltas, messages = [], []
    while True:
        message = await receive(ws)
        messages.append(message)
        if message["type"] == "text_delta":
            deltas.append(message["delta"])
        elif message["type"] in ("text", "error"):
            return deltas, message, messages


async def test_text_streams_deltas_then_the_whole_reply(harness):
    manager, backend, connect = harness
    session = manager.create("a", "echo", system_prompt="be nice")
    with trio.fail_after(10):
        async with await connect(session) as ws:
            await send(ws, type="text", content="hello there friend")
            deltas, final, messages = await reply_of(ws)
            await send(ws, type="text", content="again")
            _, second, _ = await reply_of(ws)
    assert deltas == ["hello ", "there ", "friend "]
    assert final["content"] == "hello there friend " and final["done"] and final["role"] == "assistant"
    assert len({m["utterance_id"] for m in messages}) == 1 and all(m["timestamp"] for m in messages)
    assert second["utterance_id"] != final["utterance_id"]
    # The second utterance saw the whole conversation.
    assert [m["role"] for m in backend.seen[-1]] == ["system", "user", "assistant", "user"]


async def test_cancel_stops_the_reply_at_once(harness):
    manager, backend, connect = harness
    backend.stall = True
    session = manager.create("a", "echo")
    with trio.fail_after(10):
        async with await connect(session) as ws:
            await send(ws, type="text", content="go on forever")
            assert (await receive(ws))["type"] == "text_delta"
            await send(ws, type="text", content="too soon")
            while (message := await receive(ws))["type"] != "error":
                pass
            assert "send cancel first" in message["content"]
            await send(ws, type="cancel")
            while not (message := await receive(ws)).get("cancelled"):
                assert message["type"] == "text_delta"
            await backend.cancelled.wait()
            backend.stall = False
            await send(ws, type="text", content="still here")
            _, final, _ = await reply_of(ws)
    assert final["content"] == "still here "


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("{nope", "not JSON"),
        ("[1]", "JSON object"),
        ('{"type": "shout"}', "unknown message type 'shout'"),
        ('{"type": "text"}', "non-empty string"),
        ('{"type": "text", "content": "' + "x" * 20000 + '"}', "exceeds the limit"),
        ('{"type": "audio", "data": "%%%"}', "not valid base64"),
        ('{"type": "audio", "data": "aGk="}', "no ASR model"),
        pytest.param('{"type": "text", "content": "a\\ud800"}', "lone surrogate '\\ud800' at character 1",
                     id="lone-surrogate"),
        pytest.param("[" * 60_000, "nested too deeply", id="nested-list"),
        pytest.param('{"type": "text", "content": ' + '{"a": ' * 10_000, "nested too deeply", id="nested-object"),
    ],
)
async def test_bad_messages_get_an_error_and_the_session_stays_usable(harness, raw, problem):
    manager, _, connect = harness
    session = manager.create("a", "echo")
    with trio.fail_after(10):
        async with await connect(session) as ws:
            await ws.send_message(raw)
            message = await receive(ws)
            assert message["type"] == "error" and problem in message["content"]
            await send(ws, type="text", content="fine")
            _, final, _ = await reply_of(ws)
    assert final["content"] == "fine "


async def test_audio_is_transcribed_and_speech_comes_back(harness):
    manager, _, connect = harness
    session = manager.create("a", "echo", asr_model="asr", tts_model="tts")
    with trio.fail_after(10):
        async with await connect(session) as ws:
            await send(ws, type="audio", data=base64.b64encode(b"spoken words").decode(), format="wav")
            transcription = await receive(ws)
            _, final, _ = await reply_of(ws)
            audio = await receive(ws)
    assert transcription["type"] == "transcription" and transcription["content"] == "spoken words"
    # The reply is spoken as its sentences (stripped): here one, once the reply is complete.
    assert audio["type"] == "audio" and audio["content"] == "spoken words"
    assert base64.b64decode(audio["data"]) == b"spoken words"[::-1]


async def test_a_failing_replica_is_retried_once_then_reported(harness):
    manager, backend, connect = harness
    session = manager.create("a", "echo")
    with trio.fail_after(10):
        async with await connect(session) as ws:
            backend.fail_before_output = 1
            await send(ws, type="text", content="retry me")
            _, final, _ = await reply_of(ws)
            assert final["content"] == "retry me "
            backend.fail_before_output = 2
            await send(ws, type="text", content="fails twice")
            _, final, _ = await reply_of(ws)
            assert final["type"] == "error" and "replica gone" in final["content"]
    assert [r for r, _ in session.history.turns] == ["user", "assistant"]  # no dangling question


async def test_oversized_message_closes_with_1009(harness):
    manager, _, connect = harness
    session = manager.create("a", "echo")
    with trio.fail_after(10):
        async with await connect(session) as ws:
            await ws.send_message("x" * (64 * 1024 + 1))
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await ws.get_message()
    assert info.value.reason.code == 1009


async def test_a_deleted_session_tells_its_socket_why_and_closes_it(harness):
    manager, _, connect = harness
    session = manager.create("a", "echo")
    with trio.fail_after(10):
        async with await connect(session) as ws:
            await send(ws, type="text", content="hi")
            await reply_of(ws)
            manager.delete(session.session_id, "a")
            message = await receive(ws)
            assert message["type"] == "error" and message["content"] == "session deleted"
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await ws.get_message()
    assert info.value.reason.code == 4000


async def test_a_session_answers_one_utterance_at_a_time_across_its_sockets(harness):
    manager, backend, connect = harness
    backend.stall = True
    session = manager.create("a", "echo")
    with trio.fail_after(10):
        async with await connect(session) as first, await connect(session) as second, \
                await connect(session) as third:
            await send(first, type="text", content="go on forever")
            assert (await receive(first))["type"] == "text_delta"
            for ws in (second, third):
                await send(ws, type="text", content="me too")
                message = await receive(ws)
                assert message["type"] == "error" and "send cancel first" in message["content"]
            assert backend.most_at_once == 1 and len(backend.seen) == 1
            await send(third, type="cancel")  # any socket of the session may stop its reply
            while not (message := await receive(first)).get("cancelled"):
                pass
            backend.stall = False
            await send(second, type="text", content="my turn")
            _, final, _ = await reply_of(second)
    assert final["content"] == "my turn " and backend.most_at_once == 1


@pytest.mark.parametrize("failure", [RuntimeError("boom"), ExceptionGroup("relay", [KeyError("boom")])],
                         ids=["error", "group"])
async def test_a_failing_reply_ends_only_itself(harness, failure, caplog):
    manager, backend, connect = harness
    session = manager.create("a", "echo")
    with trio.fail_after(10):
        async with await connect(session) as ws, await connect(session) as bystander:
            backend.explode = failure
            await send(ws, type="text", content="break now")
            _, final, _ = await reply_of(ws)
            assert final["type"] == "error" and "the reply failed" in final["content"]
            backend.explode = None
            await send(ws, type="text", content="still here")
            _, final, _ = await reply_of(ws)
            assert final["content"] == "still here "
            await send(bystander, type="text", content="me too")
            _, final, _ = await reply_of(bystander)
            assert final["content"] == "me too "
    assert [r for r, _ in session.history.turns] == ["user", "assistant", "user", "assistant"]
    logged = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(logged) == 1 and "boom" in logged[0] and "\n" not in logged[0]
