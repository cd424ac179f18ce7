"""The real ASR and TTS bundles behind the gateway, driven by the official `openai` package (slow).

A control plane (hub + scheduler + gateway) in-process and nodes whose executors point
each deployed service at its real worker (whisper-asr, piper-tts) on 127.0.0.1: every call
goes gateway -> dispatcher -> node tunnel -> worker. The round trip is issue 15's proof: Piper
speaks a known sentence, Whisper transcribes it, the word error rate stays under 15%.
"""

from __future__ import annotations

import io
import time
import wave
from functools import partial

import httpx
import openai
import pytest
import trio

from runtime.control.messages import ReplicaReport
from runtime.node.agent import AgentConfig, run_agent
from runtime.plane import PlaneSettings, serve_control_plane
from tests.examples.speech import (
    ASR_MODEL,
    TTS_MODEL,
    skip_reason,
    start_piper,
    start_whisper,
    word_error_rate,
)
from tests.hub_store.bundles import make_bundle
from tests.polling import wait_until

ADMIN = "audio-admin-key"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
IO_TIMEOUT = 240  # Whisper's 30 s window takes ~1 s on an idle 2-core machine, far more on a busy one
SENTENCE = "The weather is lovely today, so we will walk to the park after lunch."
SERVICES = {"whisper-asr": (ASR_MODEL, "asr"), "piper-tts": (TTS_MODEL, "tts")}

pytestmark = [pytest.mark.slow, pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")]


class SpeechExecutor:
    """A node's executor that runs nothing itself: each service is one already running worker."""

    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls
        self.running: dict[str, ReplicaReport] = {}

    def inventory(self):
        return (), tuple(self.running.values())

    def apply(self, assign, hub_url, report):
        self.running = {}
        for a in assign.replicas:
            rep = ReplicaReport(a.replica_id, a.service_id, a.version, a.attempt, "ready",
                                models=(SERVICES[a.service_id][0],), max_concurrency=1)
            self.running[a.replica_id] = rep
            report(rep)

    def worker_url(self, replica_id):
        rep = self.running.get(replica_id)
        return self.urls[rep.service_id] if rep is not None else None


@pytest.fixture(scope="module")
def workers():
    """Both real workers, once for the module."""
    whisper = start_whisper()
    try:
        piper = start_piper()
    except BaseException:
        whisper.stop()
        raise
    yield {"whisper-asr": whisper.url, "piper-tts": piper.url}
    assert piper.stop() == 0, piper.stderr_text()
    assert whisper.stop() == 0, whisper.stderr_text()


@pytest.fixture
async def plane(nursery, tmp_path, workers):
    """The plane with both bundles deployed; yields (handle, admin client, tenant key)."""
    settings = PlaneSettings(data_dir=tmp_path / "plane", port=0, roles=("hub", "scheduler", "gateway"),
                             heartbeat_interval=0.2)
    handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))
    async with httpx.AsyncClient(base_url=handle.url, timeout=30, headers=ADMIN_AUTH) as admin:
        with trio.fail_after(60):
            for service, (model, kind) in SERVICES.items():
                bundle = make_bundle(tmp_path, "1.0.0", service_id=service, files={"worker.py": b"\n"},
                                     models=[{"model_id": model, "model_type": kind, "version": "1.0.0",
                                              "path": "worker.py"}])
                r = await admin.put(f"/api/services/{service}/1.0.0", content=bundle.path.read_bytes())
                assert r.status_code in (200, 201), r.text
            # Two nodes: the test bundles declare the same port, so each service gets a node of its own.
            for name in ("n1", "n2"):
                token = (await admin.post("/api/cluster/tokens", json={"name": name})).json()["token"]
                await nursery.start(run_agent, AgentConfig(url=handle.url, token=token, node_id=name, name=name),
                                    SpeechExecutor(workers))
            for service in SERVICES:
                r = await admin.post("/api/deployments", json={"service": service})
                assert r.status_code == 201, r.text
            await wait_until(lambda: handle.scheduler.routes(ASR_MODEL) and handle.scheduler.routes(TTS_MODEL))
            await admin.post("/api/gateway/tenants", json={"name": "acme"})
            key = (await admin.post("/api/gateway/keys", json={"tenant": "acme"})).json()["key"]
        yield handle, admin, key


def _round_trip(base_url: str, key: str) -> dict:
    """Speak SENTENCE, then transcribe and translate it, with the unmodified openai package (sync)."""
    client = openai.OpenAI(base_url=base_url + "/v1", api_key=key, max_retries=0, timeout=IO_TIMEOUT)
    try:
        began = time.monotonic()
        pieces: list[tuple[float, int]] = []
        with client.audio.speech.with_streaming_response.create(
                model=TTS_MODEL, voice="alloy", input=SENTENCE + " It should be sunny all afternoon.",
                response_format="wav") as response:
            content_type = response.headers["content-type"]
            audio = b""
            for chunk in response.iter_bytes():
                pieces.append((time.monotonic() - began, len(chunk)))
                audio += chunk
        # Just the first sentence for the transcription: a WAV file the openai package uploads.
        first = client.audio.speech.create(model=TTS_MODEL, voice="alloy", input=SENTENCE, response_format="wav")
        wav = first.read()
        transcript = client.audio.transcriptions.create(model=ASR_MODEL, file=("speech.wav", wav), language="en")
        translated = client.audio.translations.create(model=ASR_MODEL, file=("speech.wav", wav))
        return {"content_type": content_type, "audio": audio, "pieces": pieces, "wav": wav,
                "text": transcript.text, "translated": translated.text}
    finally:
        client.close()


def _seconds(wav: bytes) -> float:
    # A streamed WAV's header says "unknown length": count the PCM after the 44-byte header.
    with wave.open(io.BytesIO(wav[:44])) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 22_050)
    return (len(wav) - 44) / (2 * 22_050)


async def test_piper_speaks_whisper_transcribes_through_the_gateway(plane):
    handle, admin, key = plane
    with trio.fail_after(IO_TIMEOUT * 2):
        result = await trio.to_thread.run_sync(partial(_round_trip, handle.url, key))
        usage = (await admin.get("/api/gateway/usage", params={"tenant": "acme"})).json()
        metrics = (await admin.get("/metrics")).text
    assert result["content_type"] == "audio/wav" and result["audio"][:4] == b"RIFF"
    # The streamed speech came in more than one piece (two sentences), the audio in order.
    assert len([n for _, n in result["pieces"] if n]) >= 2, result["pieces"]
    wer = word_error_rate(SENTENCE, result["text"])
    assert wer < 0.15, (result["text"], wer)
    assert word_error_rate(SENTENCE, result["translated"]) < 0.15, result["translated"]
    spoken = _seconds(result["audio"]) + _seconds(result["wav"])
    heard = 2 * _seconds(result["wav"])
    rows = {row["model"]: row for row in usage}
    assert rows[TTS_MODEL]["requests"] == 2 and rows[TTS_MODEL]["audio_seconds"] == pytest.approx(spoken, abs=0.01)
    assert rows[ASR_MODEL]["requests"] == 2 and rows[ASR_MODEL]["audio_seconds"] == pytest.approx(heard, abs=0.05)
    assert f'flowctl_gateway_audio_seconds_total{{model="{ASR_MODEL}",tenant="acme",via="http"}}' in metrics
    assert f'flowctl_gateway_audio_seconds_total{{model="{TTS_MODEL}",tenant="acme",via="http"}}' in metrics
