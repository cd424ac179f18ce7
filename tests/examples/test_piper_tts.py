"""The piper-tts worker on the real en_US-joe-medium voice, as a subprocess over HTTP (slow)."""

from __future__ import annotations

import io
import struct
import time

import httpx
import pytest
import trio

from tests.examples.speech import TTS_MODEL, skip_reason, start_piper
from tests.examples.workers import wait_for_health

IO_TIMEOUT = 60
RATE = 22_050
FOUR_SENTENCES = ("The sun rose over the quiet town. Birds began to sing in the old oak tree. "
                  "A baker opened his shop on the corner. Soon the streets were full of people.")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")]


@pytest.fixture(scope="module")
def piper():
    """One worker (one voice load) for this module."""
    worker = start_piper()
    yield worker
    assert worker.stop() == 0, worker.stderr_text()


@pytest.fixture
async def client(piper):
    async with httpx.AsyncClient(base_url=piper.url, timeout=IO_TIMEOUT) as c:
        yield c


def speech(text="Hello there.", **extra):
    return {"model": TTS_MODEL, "input": text, **extra}


def duration(data: bytes) -> float:
    """Seconds of audio in an encoded file, decoded with PyAV."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        return sum(frame.samples for frame in container.decode(stream)) / stream.rate


async def test_health_and_models(client):
    with trio.fail_after(IO_TIMEOUT):
        health = (await client.get("/health")).json()
        models = (await client.get("/v1/models")).json()
    assert health["status"] == "ok" and health["max_concurrency"] == 1 and health["sample_rate"] == RATE
    assert health["voices"] == ["en_US-joe-medium", "joe"]
    assert [m["id"] for m in models["data"]] == [TTS_MODEL]


async def test_wav_streams_sentence_by_sentence(client):
    began = time.monotonic()
    pieces: list[tuple[float, bytes]] = []
    with trio.fail_after(IO_TIMEOUT):
        async with client.stream("POST", "/v1/audio/speech", json=speech(FOUR_SENTENCES, response_format="wav",
                                                                         voice="joe")) as r:
            assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
            assert r.headers["x-audio-sample-rate"] == str(RATE)
            async for chunk in r.aiter_raw():
                pieces.append((time.monotonic() - began, chunk))
        ended = time.monotonic() - began
    data = b"".join(chunk for _, chunk in pieces)
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt " and data[36:40] == b"data"
    assert struct.unpack("<HHIIHH", data[20:36]) == (1, 1, RATE, 2 * RATE, 2, 16)
    pcm = len(data) - 44
    assert pcm % 2 == 0 and 5.0 < pcm / (2 * RATE) < 20.0  # four sentences: several seconds of speech
    # Audio arrived in several pieces, the first of them well before the last sentence was done.
    audio = [(at, chunk) for at, chunk in pieces if at > 0 and len(chunk) > 44]
    assert len(audio) >= 2, [len(c) for _, c in pieces]
    first_audio_at = audio[0][0]
    assert first_audio_at < ended * 0.8, (first_audio_at, ended)


async def test_pcm_mp3_and_opus(client):
    with trio.fail_after(IO_TIMEOUT):
        pcm = await client.post("/v1/audio/speech", json=speech(response_format="pcm"))
        mp3 = await client.post("/v1/audio/speech", json=speech())  # OpenAI's default: mp3
        opus = await client.post("/v1/audio/speech", json=speech(response_format="opus", voice="alloy"))
    assert pcm.headers["content-type"] == "audio/pcm" and pcm.headers["x-audio-bytes-per-second"] == str(2 * RATE)
    seconds = len(pcm.content) / (2 * RATE)
    assert 0.4 < seconds < 3.0 and len(pcm.content) % 2 == 0
    assert mp3.headers["content-type"] == "audio/mpeg" and opus.headers["content-type"] == "audio/ogg"
    for reply in (mp3, opus):
        assert abs(duration(reply.content) - seconds) < 0.3
        # The gateway bills from the bytes at the declared constant rate: within a few percent.
        declared = len(reply.content) / float(reply.headers["x-audio-bytes-per-second"])
        assert abs(declared - seconds) < 0.25 * seconds + 0.1, (declared, seconds)


async def test_speed_shortens_the_audio(client):
    with trio.fail_after(IO_TIMEOUT):
        normal = await client.post("/v1/audio/speech", json=speech("Speaking quickly now.", response_format="pcm"))
        fast = await client.post("/v1/audio/speech", json=speech("Speaking quickly now.", response_format="pcm",
                                                                 speed=2.0))
    assert len(fast.content) < 0.7 * len(normal.content)


@pytest.mark.parametrize(("body", "status", "param"), [
    (speech(""), 400, "input"),
    (speech("x" * 4097), 400, "input"),
    (speech(voice="nobody"), 400, "voice"),
    (speech(voice=["joe"]), 400, "voice"),
    (speech(response_format={"wav": 1}), 400, "response_format"),
    (speech(response_format="aiff"), 400, "response_format"),
    (speech(speed=0), 400, "speed"),
    (speech(speed="fast"), 400, "speed"),
    ({"input": "hi"}, 400, "model"),
    (speech(model="other-voice"), 404, "model"),
])
async def test_bad_requests_are_4xx_naming_the_field(client, body, status, param):
    with trio.fail_after(IO_TIMEOUT):
        r = await client.post("/v1/audio/speech", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param and r.json()["error"]["message"]


async def test_malformed_and_oversized_bodies(client):
    with trio.fail_after(IO_TIMEOUT):
        not_json = await client.post("/v1/audio/speech", content=b"{nope")
        too_big = await client.post("/v1/audio/speech", content=b"x" * (65 * 1024))
        wrong_method = await client.get("/v1/audio/speech")
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_json"
    assert too_big.status_code == 413 and wrong_method.status_code == 405


async def test_a_client_that_leaves_stops_the_synthesis(client):
    long_text = " ".join(f"This is sentence number {n} of a long story." for n in range(1, 41))
    before = (await client.get("/health")).json()["audio_seconds"]
    with trio.fail_after(IO_TIMEOUT):
        async with client.stream("POST", "/v1/audio/speech", json=speech(long_text, response_format="pcm")) as r:
            async for chunk in r.aiter_raw():
                if chunk:
                    break  # the first sentence's audio: leave
        idle = await wait_for_health(client, lambda b: b["active_requests"] == 0, deadline_s=20)
        after = await client.post("/v1/audio/speech", json=speech(response_format="pcm"))
    # Forty sentences are over a minute of speech; a few at most were made before it stopped.
    assert idle["audio_seconds"] - before < 30, idle
    assert after.status_code == 200 and after.content
