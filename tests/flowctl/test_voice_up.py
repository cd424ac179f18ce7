"""A seed 002 voice session through a real `flowctl up` with the three real models (slow).

The plane runs with a tutor table (--tutors) and --anonymous-tenant, as the seed's clients send
no key and name only a tutor: `{"tutor_id": 1, "student_id": 1, "kb_id": "test-kb"}`. The real
bundles (whisper-asr, llama-chat's Gemma 3 270M, piper-tts) are packed, published and deployed
on its local node; Piper speaks a question through the gateway, the session hears it (Whisper),
answers (Gemma) and speaks the answer (Piper), sentence by sentence.
"""

import io
import json
import wave

import httpx
import pytest
import trio
import trio_websocket

from bench._voice_turn import MAX_MESSAGE_BYTES, voice_turn
from packer import pack_dir
from runtime.sessions.history import PER_MESSAGE_TOKENS, estimate_tokens
from runtime.sessions.wav import complete_wav
from tests.examples.speech import (
    PIPER_DIR,
    WHISPER_DIR,
    ensure_models,
    skip_reason,
    word_error_rate,
)
from tests.examples.test_llama_chat import _skip_reason as llama_skip_reason
from tests.examples.workers import EXAMPLES
from tests.flowctl.test_up import cli, cluster, until  # noqa: F401 - cluster is a fixture

SYSTEM = "You are a friendly English tutor. Answer in one or two short sentences."
TUTORS = f"""
[1]
model = "gemma-3-270m"
asr_model = "whisper-base"
tts_model = "piper-joe"
voice = "joe"
system_prompt = "{SYSTEM}"
"""
QUESTION = "What is the capital city of France?"
SEED_BODY = {"tutor_id": 1, "student_id": 1, "kb_id": "test-kb"}
LIMIT_S = 1200  # packing ~450 MB of models, three workers starting on a shared 2-core machine

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
              pytest.mark.skipif(llama_skip_reason() is not None, reason=llama_skip_reason() or "")]


@pytest.mark.timeout(LIMIT_S + 60)
async def test_a_voice_session_through_flowctl_up_with_whisper_gemma_and_piper(cluster, tmp_path):  # noqa: F811
    port, start = cluster
    base = f"http://127.0.0.1:{port}"
    tutors = tmp_path / "tutors.toml"
    tutors.write_text(TUTORS)
    for directory in (WHISPER_DIR, PIPER_DIR):
        await trio.to_thread.run_sync(ensure_models, directory)
    bundles = [await trio.to_thread.run_sync(pack_dir, EXAMPLES / name, tmp_path / "dist")
               for name in ("whisper-asr", "llama-chat", "piper-tts")]
    with trio.fail_after(LIMIT_S):
        await start("plane", "--data-dir", str(tmp_path / "plane"), "--anonymous-tenant", "seed",
                    "--tutors", str(tutors))
        await until(lambda s: [n["state"] for n in s["nodes"]] == ["ready"], port)
        for bundle in bundles:
            code, _, err = await cli("publish", str(bundle.path), "--hub", base, port=port)
            assert code == 0, err
        for service in ("whisper-asr", "llama-chat", "piper-tts"):
            code, _, err = await cli("deploy", service, "--timeout", "600", port=port)
            assert code == 0, err
        await until(lambda s: {m["model"] for m in s["models"]} >= {"whisper-base", "gemma-3-270m", "piper-joe"},
                    port)

        async with httpx.AsyncClient(base_url=base, timeout=300) as client:  # no key, as the seed's clients
            r = await client.post("/v1/audio/speech", json={"model": "piper-joe", "input": QUESTION, "voice": "joe",
                                                            "response_format": "wav"})
            assert r.status_code == 200, r.text
            question = complete_wav(r.content)
            r = await client.post("/v1/sessions", json=SEED_BODY)
            assert r.status_code == 201, r.text
            created = r.json()
            assert (created["asr_model"], created["model"], created["tts_model"], created["voice"]) == (
                "whisper-base", "gemma-3-270m", "piper-joe", "joe")

            async with trio_websocket.open_websocket_url(f"{created['engine_url']}?token={created['engine_token']}",
                                                         max_message_size=MAX_MESSAGE_BYTES) as ws:
                seen = []
                turn = await voice_turn(ws, question, on_message=lambda m, _: seen.append(m))
                history_tokens = (await client.get(f"/v1/sessions/{created['session_id']}")).json()["history_tokens"]
                # Whisper cannot decode this: one error, and the session goes on.
                bad = await voice_turn(ws, b"RIFF, but not audio at all")
                assert bad.errors and "HTTP 400" in bad.errors[0], bad.errors
                await ws.send_message(json.dumps({"type": "text", "content": "Thank you."}))
                while (message := json.loads(await ws.get_message()))["type"] != "text":
                    assert message["type"] in ("text_delta", "audio"), message
                assert message["content"].strip()

            assert not turn.errors, turn.errors
            kinds = [m["type"] for m in seen]
            assert kinds[0] == "transcription" and seen[0]["role"] == "user" and seen[0]["timestamp"]
            assert word_error_rate(QUESTION, turn.transcription) < 0.15, turn.transcription
            text = seen[kinds.index("text")]
            assert text["role"] == "assistant" and text["timestamp"] and turn.reply.strip()
            assert turn.audio and kinds.count("text") == 1
            for message, audio in zip((m for m in seen if m["type"] == "audio"), turn.audio, strict=True):
                assert message["role"] == "assistant" and message["content"] and message["sample_rate"] == 22050
                with wave.open(io.BytesIO(audio)) as w:
                    assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (22050, 1, 2)
                    assert w.getnframes() > 2205  # at least a tenth of a second of speech per sentence

            info = (await client.get(f"/v1/sessions/{created['session_id']}")).json()
            # The history held the system prompt, what Whisper heard and what Gemma said after the first turn.
            expected = sum(estimate_tokens(c) + PER_MESSAGE_TOKENS for c in (SYSTEM, turn.transcription, turn.reply))
            assert history_tokens == expected and info["history_tokens"] > expected
            assert {p["node_id"] for p in info["pipeline"].values()} == {info["node_id"]}  # one node, one group
