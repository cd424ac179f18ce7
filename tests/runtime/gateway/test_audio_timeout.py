"""The first-byte timeout of audio uploads: a transcription may take far longer than a chat reply.

A transcription's first byte is its whole answer, so the gateway waits `audio_first_byte_timeout`
(600 s by default) for `/v1/audio/transcriptions` and `/v1/audio/translations`, not the
`first_byte_timeout` of other models (120 s). Here both are set small and a real HTTP worker
answers after the delay its query string names, so the rule is checked in seconds.
"""

from __future__ import annotations

import inspect
import json
from functools import partial
from urllib.parse import parse_qs, urlsplit

import h11
import pytest
import trio

from runtime.dispatch.dispatcher import DEFAULT_FIRST_BYTE_TIMEOUT
from runtime.gateway.app import Gateway
from runtime.gateway.audio import AUDIO_FIRST_BYTE_TIMEOUT
from tests.runtime.gateway.conftest import _start_cluster
from tests.runtime.gateway.test_audio import BOUNDARY, form

CHAT_TIMEOUT, AUDIO_TIMEOUT = 0.4, 2.0
SETTINGS = {"first_byte_timeout": CHAT_TIMEOUT, "audio_first_byte_timeout": AUDIO_TIMEOUT}


async def _slow_worker(stream: trio.SocketStream) -> None:
    """Answer each request after `?delay_s=` seconds: a transcription, or a chat reply."""
    conn = h11.Connection(h11.SERVER)
    with trio.move_on_after(60):
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                conn.receive_data(data)
                continue
            if not isinstance(event, h11.Request):
                if isinstance(event, h11.ConnectionClosed):
                    return
                continue
            target = urlsplit(event.target.decode())
            while not isinstance(part := conn.next_event(), h11.EndOfMessage):  # the body: not needed
                if part is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
            await trio.sleep(float(parse_qs(target.query).get("delay_s", ["0"])[0]))
            if target.path.startswith("/v1/audio/"):
                body, headers = {"text": "slow but complete"}, [("X-Audio-Seconds", "1.000")]
            else:
                body, headers = {"id": "c", "object": "chat.completion", "model": "echo", "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "late"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}, []
            raw = json.dumps(body).encode()
            out = conn.send(h11.Response(status_code=200, headers=[
                ("Content-Type", "application/json"), ("Content-Length", str(len(raw))), *headers]))
            await stream.send_all((out or b"") + (conn.send(h11.Data(data=raw)) or b"")
                                  + (conn.send(h11.EndOfMessage()) or b""))
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()


@pytest.fixture
async def slow(nursery, tmp_path):
    """A cluster whose only replica (models echo and whisper-base) is the slow worker."""
    listeners = await nursery.start(partial(trio.serve_tcp, _slow_worker, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    cluster, echo = await _start_cluster(nursery, tmp_path, gateway_settings=SETTINGS, nodes=0)
    try:
        await cluster.add_node(f"http://127.0.0.1:{port}", models=("echo", "whisper-base"))
        await cluster.deploy()
        yield cluster
    finally:
        with trio.CancelScope(shield=True):
            await cluster.client.aclose()
            await trio.to_thread.run_sync(echo.stop)


async def _timed(request):
    began = trio.current_time()
    r = await request
    return r, trio.current_time() - began


async def test_a_transcription_may_take_longer_than_a_chat_reply(slow):
    key = await slow.key()
    auth = {"Authorization": f"Bearer {key}"}
    upload = {**auth, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    body = form({"model": b"whisper-base", "file": b"RIFF....WAVE"})
    client = slow.client
    with trio.fail_after(30):
        chat, chat_s = await _timed(client.post("/v1/chat/completions?delay_s=1.0", headers=auth,
                                                json={"model": "echo", "messages": [{"role": "user", "content": "x"}]}))
        heard, heard_s = await _timed(client.post("/v1/audio/transcriptions?delay_s=1.0", headers=upload,
                                                  content=body))
        english, _ = await _timed(client.post("/v1/audio/translations?delay_s=1.0", headers=upload, content=body))
        too_slow, too_slow_s = await _timed(client.post("/v1/audio/transcriptions?delay_s=6", headers=upload,
                                                        content=body))
    # The chat call gives up after its own timeout; the same delay is fine for audio.
    assert (chat.status_code, chat.json()["error"]["code"]) == (504, "upstream_timeout")
    assert CHAT_TIMEOUT - 0.05 <= chat_s < 1.0
    assert heard.status_code == 200 and heard.json()["text"] == "slow but complete" and heard_s >= 1.0
    assert english.status_code == 200
    # Audio has a bound too: the audio first-byte timeout, named in the error.
    assert (too_slow.status_code, too_slow.json()["error"]["code"]) == (504, "upstream_timeout")
    assert f"{AUDIO_TIMEOUT:g} s" in too_slow.json()["error"]["message"]
    assert AUDIO_TIMEOUT - 0.05 <= too_slow_s < 5.0


def test_the_default_audio_wait_is_ten_minutes_and_longer_than_chat():
    default = inspect.signature(Gateway).parameters["audio_first_byte_timeout"].default
    assert default == AUDIO_FIRST_BYTE_TIMEOUT == 600.0 > DEFAULT_FIRST_BYTE_TIMEOUT


@pytest.mark.parametrize("value", [0, -1.0, float("nan")])
def test_a_bad_audio_first_byte_timeout_is_refused(value):
    with pytest.raises(ValueError, match="audio_first_byte_timeout"):
        Gateway(None, None, audio_first_byte_timeout=value)  # type: ignore[arg-type]
