"""Stand-in ASR and TTS workers (real HTTP on 127.0.0.1) for voice-session tests about routing and errors.

The "audio" a test sends is a WAV whose samples are the UTF-8 of what it says, so the fake ASR
"transcribes" by reading them back; the fake TTS answers a streamed WAV (unknown sizes, as piper's)
whose samples are the input text. The real models are in test_voice_up.py (slow).
"""

from __future__ import annotations

import json
import struct
from functools import partial

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from tests.runtime.scheduler.test_cluster import FakeExecutor

RATE = 22_050
TOO_LONG = b"TOO-LONG"  # a fake ASR refuses audio starting with this as over its duration limit


def fake_wav(payload: bytes, *, rate: int = 16_000, sizes: int | None = None) -> bytes:
    """A 16-bit mono WAV header then `payload` (sizes 0xFFFFFFFF when `sizes` says so)."""
    if len(payload) % 2:
        payload += b" "
    riff, data = (sizes, sizes) if sizes is not None else (36 + len(payload), len(payload))
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", data) + payload)


def spoken(text: str) -> bytes:
    """The fake audio of `text`."""
    return fake_wav(text.encode())


class SpeechWorker:
    """An ASGI worker serving /v1/audio/transcriptions and /v1/audio/speech, counting requests in flight."""

    def __init__(self) -> None:
        self.active = 0
        self.speech_requests: list[dict] = []
        self.transcriptions = 0
        self.delay_s = 0.0  # per request, before answering: time to cancel it
        self.url = ""

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.active += 1
        try:
            async with trio.open_nursery() as nursery:

                async def gone():  # the gateway reset the stream: stop at once, as real workers do
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(gone)
                await self._answer(scope["path"], body, send)
                nursery.cancel_scope.cancel()
        finally:
            self.active -= 1

    async def _answer(self, path, body, send):
        await trio.sleep(self.delay_s)
        if path == "/v1/audio/transcriptions":
            self.transcriptions += 1
            audio = body.split(b"\r\n\r\n")[-1].rsplit(b"\r\n--", 1)[0]
            if audio.startswith(b"RIFF") and audio[44:].startswith(TOO_LONG):
                return await _json(send, 400, {"error": {"message": "the audio is longer than 300 s",
                                                         "code": "audio_too_long"}})
            if not audio.startswith(b"RIFF") or len(audio) < 44:
                return await _json(send, 400, {"error": {"message": "the file is not audio that can be decoded",
                                                         "code": "invalid_audio"}})
            return await _json(send, 200, {"text": audio[44:].decode(errors="replace").strip()})
        if path == "/v1/audio/speech":
            request = json.loads(body)
            self.speech_requests.append(request)
            if request.get("response_format") != "wav":
                return await _json(send, 400, {"error": {"message": "only wav here", "code": "invalid_request"}})
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"audio/wav")]})
            wav = fake_wav(request["input"].encode(), rate=RATE, sizes=0xFFFFFFFF)
            await send({"type": "http.response.body", "body": wav[:44], "more_body": True})
            await send({"type": "http.response.body", "body": wav[44:]})
            return None
        return await _json(send, 404, {"error": {"message": f"no {path}"}})


async def _json(send, status, obj):
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(obj).encode()})


async def serve_speech(nursery) -> SpeechWorker:
    """A SpeechWorker on 127.0.0.1, port 0, until `nursery` ends."""
    app = SpeechWorker()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    app.url = (await nursery.start(partial(serve, app, config)))[0]
    return app


class PipelineExecutor(FakeExecutor):
    """A node's executor whose replicas are served by one worker URL per service (its model id)."""

    def __init__(self, urls: dict[str, str]):
        super().__init__(None)
        self.urls = urls

    def worker_url(self, replica_id):
        report = self.running.get(replica_id)
        return self.urls.get(report.service_id) if report is not None else None
