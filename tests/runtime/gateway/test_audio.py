"""The gateway's audio endpoints without models: multipart routing, upload limits, audio-second usage.

The real ASR and TTS bundles behind the gateway are in test_audio_models.py (slow).
"""

from __future__ import annotations

import sqlite3

import pytest
import trio

from runtime.dispatch.metrics import Metrics
from runtime.dispatch.usage import UsageCounter
from runtime.gateway.audio import multipart_model
from runtime.gateway.errors import GatewayError
from runtime.gateway.keys import KeyStore

BOUNDARY = "x-boundary-42"


def form(fields: dict[str, bytes], boundary: str = BOUNDARY) -> bytes:
    """A multipart/form-data body as the openai package writes it (a file field gets a filename)."""
    out = b""
    for name, value in fields.items():
        filename = '; filename="speech.wav"' if name == "file" else ""
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{filename}\r\n\r\n").encode()
        out += value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def test_the_model_field_of_a_multipart_form():
    body = form({"file": b"RIFF....name=\"model\"\r\n\r\nfake", "model": b"whisper-base", "language": b"en"})
    assert multipart_model(body, f"multipart/form-data; boundary={BOUNDARY}") == "whisper-base"
    assert multipart_model(form({"model": b"m1"}, "q b"), 'multipart/form-data; boundary="q b"') == "m1"


@pytest.mark.parametrize(("body", "content_type", "code"), [
    (form({"file": b"x"}), f"multipart/form-data; boundary={BOUNDARY}", "missing_model"),
    (form({"model": b"m"}), "multipart/form-data", "invalid_body"),
    (b'{"model": "m"}', "application/json", "invalid_content_type"),
    (b"no parts at all", f"multipart/form-data; boundary={BOUNDARY}", "invalid_body"),
    (form({"model": b"\xff\xfe"}), f"multipart/form-data; boundary={BOUNDARY}", "invalid_model"),
])
def test_a_form_the_gateway_cannot_route_is_a_400(body, content_type, code):
    with pytest.raises(GatewayError) as caught:
        multipart_model(body, content_type)
    assert caught.value.status == 400 and caught.value.code == code


def test_audio_seconds_from_the_reply_headers():
    heard = UsageCounter(False, [("Content-Type", "application/json"), ("X-Audio-Seconds", "4.5")])
    heard.feed(b'{"text": "hi", "usage": {"type": "duration", "seconds": 4.5}}')
    assert heard.audio_seconds() == 4.5 and heard.usage() == (0, 0)
    spoken = UsageCounter(False, [("content-type", "audio/wav"), ("x-audio-bytes-per-second", "44100"),
                                  ("x-audio-header-bytes", "44")])
    for chunk in (b"R" * 44, b"\0" * 44100, b"\0" * 22050):
        spoken.feed(chunk)
    assert spoken.audio_seconds() == 1.5 and not spoken._buffer  # audio is never buffered for a usage scan
    for bad in ("nan", "-1", "inf", "lots"):
        assert UsageCounter(False, [("x-audio-seconds", bad)]).audio_seconds() == 0.0
    assert UsageCounter(True, []).audio_seconds() == 0.0


def test_metrics_count_audio_seconds():
    metrics = Metrics()
    metrics.count_audio("whisper-base", "acme", 2.25, via="http")
    metrics.count_audio("whisper-base", "acme", 1.0, via="http")
    assert ('flowctl_gateway_audio_seconds_total{model="whisper-base",tenant="acme",via="http"} 3.250'
            in metrics.render())


def test_a_schema_2_database_gains_audio_seconds(tmp_path):
    path = tmp_path / "gateway.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE tenants (name TEXT PRIMARY KEY, rpm INTEGER, tpm INTEGER, max_concurrency INTEGER,
                              created_at REAL NOT NULL, max_sessions INTEGER);
        CREATE TABLE keys (key_id TEXT PRIMARY KEY, tenant TEXT NOT NULL REFERENCES tenants(name),
                           name TEXT NOT NULL, key_hash TEXT NOT NULL, rpm INTEGER, tpm INTEGER,
                           max_concurrency INTEGER, models TEXT NOT NULL, expires_at REAL,
                           created_at REAL NOT NULL, revoked_at REAL);
        CREATE TABLE usage (day TEXT NOT NULL, tenant TEXT NOT NULL, key_id TEXT NOT NULL, model TEXT NOT NULL,
                            via TEXT NOT NULL, requests INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL,
                            completion_tokens INTEGER NOT NULL, PRIMARY KEY (day, tenant, key_id, model, via));
        INSERT INTO tenants VALUES ('acme', NULL, NULL, NULL, 1.0, NULL);
        INSERT INTO usage VALUES ('2026-12-01', 'acme', 'k1', 'echo', 'http', 2, 5, 7);
        PRAGMA user_version=2;
    """)
    db.close()
    store = KeyStore(path)
    store.add_usage([("2026-12-01", "acme", "k1", "whisper-base", "http", 1, 0, 0, 4.25),
                     ("2026-12-01", "acme", "k1", "whisper-base", "http", 1, 0, 0, 0.5)])
    rows = {r["model"]: r for r in store.usage("acme")}
    store.close()
    assert rows["echo"]["audio_seconds"] == 0.0 and rows["echo"]["completion_tokens"] == 7
    assert rows["whisper-base"]["requests"] == 2 and rows["whisper-base"]["audio_seconds"] == 4.75
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 3


@pytest.mark.parametrize("cluster", [{"gateway_settings": {"max_audio_body": 2048}}], indirect=True)
async def test_uploads_are_routed_by_the_form_and_capped_while_read(cluster):
    key = await cluster.key(models=["echo"])
    auth = {"Authorization": f"Bearer {key}"}
    content_type = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}

    async def chunked(size):  # no Content-Length: the limit is enforced as the body arrives
        for _ in range(size // 512):
            yield b"\0" * 512

    with trio.fail_after(30):
        client = cluster.client
        missing = await client.post("/v1/audio/transcriptions", headers={**auth, **content_type},
                                    content=form({"model": b"whisper-base", "file": b"RIFF"}))
        forbidden_key = await cluster.key(tenant="other", models=["whisper-*"])
        not_allowed = await client.post("/v1/audio/translations",
                                        headers={"Authorization": f"Bearer {forbidden_key}", **content_type},
                                        content=form({"model": b"echo", "file": b"RIFF"}))
        not_a_form = await client.post("/v1/audio/transcriptions", headers=auth, json={"model": "echo"})
        declared = await client.post("/v1/audio/transcriptions", headers={**auth, **content_type},
                                     content=form({"model": b"echo", "file": b"\0" * 4096}))
        streamed = await client.post("/v1/audio/transcriptions", headers={**auth, **content_type},
                                     content=chunked(8192))
        # Chat bodies keep their own (larger) limit: the audio one does not apply to them.
        chat = await client.post("/v1/chat/completions", headers=auth,
                                 json={"model": "echo", "messages": [{"role": "user", "content": "x" * 4000}]})
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "model_not_found")
    assert (not_allowed.status_code, not_allowed.json()["error"]["code"]) == (403, "model_not_allowed")
    assert (not_a_form.status_code, not_a_form.json()["error"]["code"]) == (400, "invalid_content_type")
    assert declared.status_code == 413 and "2048 bytes" in declared.json()["error"]["message"]
    assert streamed.status_code == 413
    assert chat.status_code == 200


async def test_speech_is_routed_by_its_json_model(cluster):
    key = await cluster.key()
    with trio.fail_after(30):
        r = await cluster.client.post("/v1/audio/speech", headers={"Authorization": f"Bearer {key}"},
                                      json={"model": "piper-joe", "input": "hello"})
        bad = await cluster.client.post("/v1/audio/speech", headers={"Authorization": f"Bearer {key}"},
                                        json={"input": "hello"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "model_not_found")
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "missing_model")
