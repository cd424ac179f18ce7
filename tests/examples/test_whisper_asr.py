"""The whisper-asr worker on the real Whisper base model, as a subprocess over HTTP (slow).

The speech it hears is made in-process by Piper (the piper-tts bundle's voice), then encoded
with PyAV into the formats an OpenAI client uploads.
"""

from __future__ import annotations

import json
from functools import partial

import httpx
import pytest
import trio

from tests.examples.speech import (
    ASR_MODEL,
    PIPER_DIR,
    encode,
    ensure_models,
    skip_reason,
    start_whisper,
    wav_bytes,
    word_error_rate,
)
from tests.examples.workers import wait_for_health

IO_TIMEOUT = 240  # a 30 s window takes ~1 s on an idle 2-core machine, far more on a busy one
SENTENCE = "The weather is lovely today, so we will walk to the park."
SHORT = "Good morning, how are you?"
STORY = ("Once upon a time a small fox lived at the edge of a forest. Every morning she ran down to the river "
         "to drink and to watch the fish. One day a heron landed beside her and asked where the best frogs were "
         "hiding. The fox laughed and said that frogs were not her business at all. The heron flew away over the "
         "hills, and the fox went home to sleep under the roots of an old pine. In the evening the rain began, "
         "and the whole forest smelled of wet earth and moss. Her brothers came back late, tired and hungry, "
         "and they all shared a supper of berries and mushrooms before the stars came out. The next week a "
         "traveller with a green coat walked through the valley, singing songs about distant cities and ships. "
         "He stopped at the bridge, counted his coins, and wrote a long letter to his sister by the sea. "
         "Nobody knows if the letter ever arrived, but the children of the village still tell the story.")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")]


@pytest.fixture(scope="module")
def voice():
    """Piper in-process: text -> (16-bit PCM, sample rate)."""
    ensure_models(PIPER_DIR)
    from piper import PiperVoice

    loaded = PiperVoice.load(PIPER_DIR / "models" / "en_US-joe-medium.onnx")

    def speak(text: str) -> bytes:
        return b"".join(chunk.audio_int16_bytes for chunk in loaded.synthesize(text))

    return speak, loaded.config.sample_rate


@pytest.fixture(scope="module")
def clips(voice):
    """WAV files of SENTENCE and SHORT, and the STORY (about 40 s: two of Whisper's 30 s windows)."""
    speak, rate = voice
    short = speak(SHORT)
    # Distinct sentences: repeated text would make Whisper retry each window at higher temperatures.
    minute = speak(STORY)
    return {"sentence": wav_bytes(speak(SENTENCE), rate), "short": wav_bytes(short, rate),
            "story": wav_bytes(minute, rate), "rate": rate}


@pytest.fixture(scope="module")
def whisper():
    """One worker (one model load) for this module, with small limits to test them."""
    worker = start_whisper(ASR_MAX_UPLOAD_MB="2", ASR_MAX_AUDIO_S="90")
    yield worker
    assert worker.stop() == 0, worker.stderr_text()


@pytest.fixture
async def client(whisper):
    async with httpx.AsyncClient(base_url=whisper.url, timeout=IO_TIMEOUT) as c:
        yield c


async def transcribe(client, audio: bytes, name="speech.wav", path="/v1/audio/transcriptions", **fields):
    return await client.post(path, files={"file": (name, audio)}, data={"model": ASR_MODEL, **fields})


async def test_health_and_models(client):
    with trio.fail_after(IO_TIMEOUT):
        health = (await client.get("/health")).json()
        models = (await client.get("/v1/models")).json()
    assert health["status"] == "ok" and health["max_concurrency"] == 1 and health["device"] == "cpu"
    assert [m["id"] for m in models["data"]] == [ASR_MODEL]


async def test_a_wav_is_transcribed_with_its_duration(client, clips):
    with trio.fail_after(IO_TIMEOUT):
        r = await transcribe(client, clips["sentence"])  # language detected
    assert r.status_code == 200, r.text
    body = r.json()
    assert word_error_rate(SENTENCE, body["text"]) < 0.15, body["text"]
    seconds = (len(clips["sentence"]) - 44) / (2 * clips["rate"])
    assert float(r.headers["x-audio-seconds"]) == pytest.approx(seconds, abs=0.05)
    assert body["usage"] == {"type": "duration", "seconds": pytest.approx(seconds, abs=0.05)}


async def test_flac_ogg_and_mp3_decoded_without_ffmpeg_as_text_srt_and_vtt(client, clips):
    replies = {}
    with trio.fail_after(IO_TIMEOUT):
        for name, container, codec, fmt in (("speech.flac", "flac", "flac", "text"),
                                            ("speech.ogg", "ogg", "libopus", "srt"),
                                            ("speech.mp3", "mp3", "libmp3lame", "vtt")):
            audio = encode(clips["short"], container, codec)
            replies[fmt] = await transcribe(client, audio, name, language="en", response_format=fmt,
                                            temperature="0")
    assert all(r.status_code == 200 for r in replies.values()), {f: r.text for f, r in replies.items()}
    assert all(r.headers["content-type"].startswith("text/plain") for r in replies.values())
    text = replies["text"].text.strip()
    assert word_error_rate(SHORT, text) <= 0.2, text
    srt = replies["srt"].text.splitlines()
    assert srt[0] == "1" and srt[1].startswith("00:00:00,000 --> 00:00:0"), srt
    assert word_error_rate(SHORT, srt[2]) <= 0.2, srt
    vtt = replies["vtt"].text.splitlines()
    assert vtt[0] == "WEBVTT" and vtt[2].startswith("00:00:00.000 --> 00:00:0"), vtt
    assert word_error_rate(SHORT, vtt[3]) <= 0.2, vtt


async def test_translations_in_verbose_json(client, clips):
    with trio.fail_after(IO_TIMEOUT):
        r = await transcribe(client, clips["short"], path="/v1/audio/translations", response_format="verbose_json")
    assert r.status_code == 200, r.text
    verbose = r.json()
    assert verbose["task"] == "translate" and verbose["language"] == "en"
    assert word_error_rate(SHORT, verbose["text"]) <= 0.2, verbose["text"]
    assert verbose["segments"][0]["id"] == 0 and verbose["segments"][-1]["end"] <= verbose["duration"] + 0.5
    assert verbose["text"] == "".join(seg["text"] for seg in verbose["segments"]).strip()


async def test_bad_uploads_get_a_clear_4xx(client, clips):
    silence = encode(b"RIFF" + clips["short"][4:40] + b"\0\0\0\0", "flac", "flac")  # a WAV of 0 samples
    long_silence = encode(wav_bytes(b"\0" * (2 * 16_000 * 95), 16_000), "flac", "flac")  # 95 s, tiny as FLAC
    with trio.fail_after(IO_TIMEOUT):
        cases = {
            "json body": await client.post("/v1/audio/transcriptions", json={"model": ASR_MODEL}),
            "no file": await client.post("/v1/audio/transcriptions", data={"model": ASR_MODEL},
                                         files={"other": ("x", b"x")}),
            "no model": await client.post("/v1/audio/transcriptions", files={"file": ("a.wav", clips["short"])}),
            "empty": await transcribe(client, b""),
            "not audio": await transcribe(client, b"this is not audio at all " * 40, "notes.txt"),
            "no samples": await transcribe(client, silence, "empty.flac"),
            "too long": await transcribe(client, long_silence, "long.flac"),
            "too big": await transcribe(client, b"\0" * (3 << 20)),
            "bad format": await transcribe(client, clips["short"], response_format="docx"),
            "bad language": await transcribe(client, clips["short"], language="klingon"),
            "bad temperature": await transcribe(client, clips["short"], temperature="2"),
            "unknown model": await client.post("/v1/audio/transcriptions", data={"model": "whisper-huge"},
                                               files={"file": ("a.wav", clips["short"])}),
        }
    statuses = {name: r.status_code for name, r in cases.items()}
    assert statuses == {"json body": 400, "no file": 400, "no model": 400, "empty": 400, "not audio": 400,
                        "no samples": 400, "too long": 400, "too big": 413, "bad format": 400,
                        "bad language": 400, "bad temperature": 400, "unknown model": 404}
    errors = {name: r.json()["error"] for name, r in cases.items()}
    assert errors["too long"]["code"] == "audio_too_long" and "90 s" in errors["too long"]["message"]
    assert errors["not audio"]["param"] == "file" and "could not be decoded" in errors["not audio"]["message"]
    assert "larger than" in errors["too big"]["message"]
    for name, error in errors.items():
        assert error["message"] and "\n" not in error["message"], (name, error)
    json.dumps(errors)  # every one is an OpenAI error body


async def test_a_client_that_leaves_stops_the_transcription(client, clips):
    before = (await client.get("/health")).json()
    with trio.fail_after(IO_TIMEOUT):
        async with httpx.AsyncClient(base_url=client.base_url, timeout=IO_TIMEOUT) as leaving:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(transcribe, leaving, clips["story"], language="en"))
                # Leave as soon as the model has the file: it is then inside its first window.
                await wait_for_health(client, lambda b: b["active_requests"] == 1, deadline_s=IO_TIMEOUT - 10)
                nursery.cancel_scope.cancel()
        idle = await wait_for_health(client, lambda b: b["active_requests"] == 0, deadline_s=IO_TIMEOUT - 10,
                                     interval_s=0.1)
        after = await transcribe(client, clips["short"], language="en")
    # The model saw the cancel between two 30 s windows and stopped; the story was never finished.
    assert idle["cancelled"] == before["cancelled"] + 1 and idle["audio_seconds"] == before["audio_seconds"]
    assert after.status_code == 200 and word_error_rate(SHORT, after.json()["text"]) <= 0.2
