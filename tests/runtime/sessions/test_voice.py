"""Voice sessions (seed 002's audio messages) over real HTTP and WebSockets, through the tunnel.

The LLM is the real echo worker; ASR and TTS are stand-ins (speech_fakes.py) since these tests are
about the pipeline's routing, pinning, streaming order, cancellation and errors. Two nodes:
n1 serves all three stages, n2 the LLM and TTS only.
"""

import base64
import io
import json
import wave
from functools import partial
from types import SimpleNamespace

import httpx
import pytest
import trio
import trio_websocket
from quart_trio import QuartTrio

from runtime.dispatch import Dispatcher
from runtime.dispatch.limits import Limits, Principal
from runtime.http import open_test_server
from runtime.node.agent import AgentConfig, run_agent
from runtime.scheduler import routes as cluster_routes
from runtime.scheduler.service import Scheduler
from runtime.scheduler.store import ClusterStore
from runtime.sessions import routes
from runtime.sessions.backend import ClusterBackend
from runtime.sessions.manager import SessionError, SessionManager
from tests.examples.workers import EXAMPLES, spawn_worker
from tests.polling import wait_until
from tests.runtime.scheduler.test_cluster import resolve
from tests.runtime.sessions.speech_fakes import (
    RATE,
    TOO_LONG,
    PipelineExecutor,
    fake_wav,
    serve_speech,
    spoken,
)

TUTORS = {"1": {"model": "echo", "asr_model": "asr", "tts_model": "tts", "voice": "joe",
                "system_prompt": "You are tutor one."},
          "3": {"model": "echo", "tts_model": "nope"}}
AUTH = {"Authorization": "Bearer key-a"}
SPEECH = "Hello there, tutor. How are you today? I would like to practise my English."


async def authenticate(header):
    if header == "Bearer key-one":  # one request at a time
        return Principal("tenant-a", key_id="key-one", key_limits=Limits(max_concurrency=1))
    if header != "Bearer key-a":
        raise SessionError(401, "a valid API key is required")
    return Principal("tenant-a", key_id="key-a")


@pytest.fixture
async def voice(nursery, tmp_path):
    echo = await trio.to_thread.run_sync(partial(spawn_worker, EXAMPLES / "echo",
                                                 env={"ECHO_TOKEN_DELAY_S": "0.02"}))
    asr, tts = await serve_speech(nursery), await serve_speech(nursery)
    store = ClusterStore(tmp_path / "cluster.db")
    scheduler = Scheduler(store, resolve, hub_url="http://127.0.0.1:1", heartbeat_interval=0.5)
    manager = SessionManager()
    app = QuartTrio("voice")
    routes.register(app, manager, ClusterBackend(Dispatcher(scheduler)), scheduler, authenticate=authenticate,
                    tutors=TUTORS)
    cluster_routes.register(app, scheduler, admin_key_hash="0" * 64, version="t", roles=("scheduler",))
    try:
        async with open_test_server(app) as url:
            await nursery.start(scheduler.run)
            for node in ("n1", "n2"):
                _, token = store.create_token(node)
                await nursery.start(run_agent, AgentConfig(url=url, token=token, node_id=node, name=node),
                                    PipelineExecutor({"echo": echo.url, "asr": asr.url, "tts": tts.url}))
            await scheduler.deploy("echo", replicas=2, nodes=("n1", "n2"))
            await scheduler.deploy("tts", replicas=2, nodes=("n1", "n2"))
            await scheduler.deploy("asr", replicas=1, nodes=("n1",))
            with trio.fail_after(10):
                await wait_until(lambda: len(scheduler.routes("echo")) == 2 and len(scheduler.routes("tts")) == 2
                                 and scheduler.routes("asr"))
            assert {r.node_id for r in scheduler.routes("tts")} == {"n1", "n2"}
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                yield SimpleNamespace(client=client, url=url, manager=manager, scheduler=scheduler, asr=asr,
                                      tts=tts, echo_url=echo.url)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(echo.stop)
        store.close()


async def create(harness, headers=AUTH, **body):
    r = await harness.client.post("/v1/sessions", headers=headers, json=body)
    assert r.status_code == 201, r.text
    return r.json()


def socket(voice, created):
    port = int(voice.url.rsplit(":", 1)[1])
    return trio_websocket.open_websocket("127.0.0.1", port, f"/ws/sessions/{created['session_id']}"
                                         f"?token={created['engine_token']}", use_ssl=False)


async def turn(ws, message, *, audio_after_text=True):
    """Send one message; collect the server's answers until the reply's text (and its audio) or an error."""
    await ws.send_message(json.dumps(message))
    seen = []
    while True:
        seen.append(json.loads(await ws.get_message()))
        kind = seen[-1]["type"]
        if kind == "error" or (kind == "text" and not audio_after_text):
            return seen
        texts = [m["content"] for m in seen if m["type"] == "text"]
        if texts and kind in ("text", "audio") and _letters(texts[0]) == _letters(
                "".join(m["content"] for m in seen if m["type"] == "audio")):
            return seen  # the whole reply is spoken (the rest of its audio may follow its text)


def _letters(text):
    return "".join(text.split())


def audio_message(text: str) -> dict:
    return {"type": "audio", "data": base64.b64encode(spoken(text)).decode(), "format": "wav"}


async def test_a_tutor_voice_turn_transcription_text_then_audio_spoken_while_the_llm_generates(voice):
    created = await create(voice, tutor_id=1, student_id=3)
    assert (created["asr_model"], created["model"], created["tts_model"], created["voice"]) == (
        "asr", "echo", "tts", "joe")
    with trio.fail_after(30):
        async with socket(voice, created) as ws:
            seen = await turn(ws, audio_message(SPEECH))
    kinds = [m["type"] for m in seen]
    assert kinds[0] == "transcription" and seen[0]["content"] == SPEECH and seen[0]["role"] == "user"
    assert "text_delta" in kinds and kinds.count("text") == 1
    text = seen[kinds.index("text")]
    assert text["content"].strip() == SPEECH and text["role"] == "assistant" and text["timestamp"]
    audios = [m for m in seen if m["type"] == "audio"]
    # Sentence by sentence, the first before the LLM finished (before the whole `text`).
    assert [a["content"] for a in audios] == ["Hello there, tutor.", "How are you today?",
                                              "I would like to practise my English."]
    assert kinds.index("audio") < kinds.index("text")
    for a in audios:
        assert a["role"] == "assistant" and a["format"] == "wav" and a["sample_rate"] == RATE and a["timestamp"]
        with wave.open(io.BytesIO(base64.b64decode(a["data"]))) as w:  # a whole WAV: its sizes are filled in
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2)
            assert w.readframes(w.getnframes()).decode().strip() == a["content"]
    assert all(r["response_format"] == "wav" and r["voice"] == "joe" and r["model"] == "tts"
               for r in voice.tts.speech_requests)
    session = voice.manager.get(created["session_id"], "tenant-a")
    assert session.history.turns == [("user", SPEECH), ("assistant", text["content"])]
    assert session.history.system_prompt == "You are tutor one."
    info = (await voice.client.get(f"/v1/sessions/{created['session_id']}", headers=AUTH)).json()
    # ASR exists on n1 only, so the whole group is there.
    assert {stage: p["node_id"] for stage, p in info["pipeline"].items()} == {"asr": "n1", "llm": "n1", "tts": "n1"}


async def test_explicit_models_win_over_the_tutor_and_an_unknown_tutor_is_a_400(voice):
    own = await create(voice, tutor_id=1, tts_model="tts", voice="amy", asr_model="asr")
    assert (own["model"], own["voice"]) == ("echo", "amy")
    untutored = await create(voice, tutor_id=7, model="echo")  # names its model: no tutor needed
    assert (untutored["asr_model"], untutored["tts_model"]) == (None, None)
    r = await voice.client.post("/v1/sessions", headers=AUTH, json={"tutor_id": 7, "student_id": 1})
    assert r.status_code == 400 and r.json()["detail"] == "unknown tutor_id 7: the plane's tutor table has 1, 3"

    # Tutor 3's TTS model is not deployed: the session opens, says so, and its replies are text.
    r = await voice.client.post("/mgmt/v1/sessions", headers=AUTH, json={"tutor_id": 3})
    assert r.status_code == 201 and r.json()["warnings"] == [
        "no ready replica serves tutor 3's tts_model 'nope' now: spoken replies get an error until one does"]
    async with socket(voice, r.json()) as ws:
        seen = await turn(ws, {"type": "text", "content": "Hello tutor three."})
        assert [m["type"] for m in seen if m["type"] != "text_delta"] == ["text", "error"]
        assert seen[-1]["content"] == "speech synthesis failed: the model 'nope' does not exist"
        seen = await turn(ws, {"type": "text", "content": "Still here."})
        assert [m["type"] for m in seen if m["type"] != "text_delta"] == ["text", "error"]
    TUTORS["9"] = {"model": "gone"}
    try:
        r = await voice.client.post("/v1/sessions", headers=AUTH, json={"tutor_id": 9})
        assert r.status_code == 400 and r.json()["detail"] == "no ready replica serves tutor 9's model 'gone'"
    finally:
        del TUTORS["9"]
    for body, detail in (({"model": "echo", "voice": "joe"}, "a voice needs a tts_model"),
                         ({"model": "echo", "stream": "yes"}, "stream must be true or false"),
                         ({"model": "echo", "max_tokens": 0}, "max_tokens must be a whole number"),
                         ({"model": "echo", "tts_model": "tts", "voice": "../x"}, "is not a voice name")):
        r = await voice.client.post("/v1/sessions", headers=AUTH, json=body)
        assert r.status_code == 400 and detail in r.json()["detail"], (body, r.text)


async def test_a_key_allowed_one_request_at_a_time_still_gets_speech_while_the_llm_streams(voice):
    created = await create(voice, headers={"Authorization": "Bearer key-one"}, tutor_id=1)
    with trio.fail_after(30):
        async with socket(voice, created) as ws:
            for _ in range(2):  # the turn's one slot is back for the next
                seen = await turn(ws, audio_message(SPEECH))
                kinds = [m["type"] for m in seen]
                assert "error" not in kinds and kinds.count("audio") == 3 and kinds.index("audio") < kinds.index("text")


async def test_without_streaming_the_reply_is_one_text_then_one_audio(voice):
    created = await create(voice, tutor_id=1, stream=False)
    with trio.fail_after(30):
        async with socket(voice, created) as ws:
            seen = await turn(ws, audio_message(SPEECH))
    assert [m["type"] for m in seen] == ["transcription", "text", "audio"]
    assert seen[2]["content"] == seen[1]["content"].strip()


@pytest.mark.parametrize(("data", "expected"), [
    ("not base64!", "is not valid base64"),
    ("", "needs base64"),
    (base64.b64encode(b"\x00\x01 not audio at all").decode(), "invalid_audio"),
    (base64.b64encode(fake_wav(TOO_LONG + b" and on")).decode(), "audio_too_long"),
    (base64.b64encode(fake_wav(b"   ")).decode(), "no_speech"),
])
async def test_bad_audio_gets_an_error_and_the_session_stays_usable(voice, data, expected):
    created = await create(voice, tutor_id=1)
    with trio.fail_after(30):
        async with socket(voice, created) as ws:
            seen = await turn(ws, {"type": "audio", "data": data})
            assert [m["type"] for m in seen] == ["error"], seen
            assert expected in seen[0]["content"] or seen[0].get("code") == expected, seen
            assert seen[0]["timestamp"]
            again = await turn(ws, audio_message("Still there?"))
    assert again[0] == {**again[0], "type": "transcription", "content": "Still there?"}
    assert any(m["type"] == "text" for m in again) and any(m["type"] == "audio" for m in again)
    session = voice.manager.get(created["session_id"], "tenant-a")
    assert [role for role, _ in session.history.turns] == ["user", "assistant"]


async def test_a_pipeline_model_no_longer_deployed_is_an_error_and_the_session_goes_on(voice):
    created = await create(voice, tutor_id=1)
    with trio.fail_after(30):
        async with socket(voice, created) as ws:
            await voice.scheduler.undeploy("tts")
            await wait_until(lambda: not voice.scheduler.routes("tts"))
            # Synthesis fails on the first sentence while the LLM goes on: one error, the text still whole.
            await ws.send_message(json.dumps(audio_message(SPEECH)))
            seen = []
            while not ({"text", "error"} <= {m["type"] for m in seen}):
                seen.append(json.loads(await ws.get_message()))
            kinds = [m["type"] for m in seen if m["type"] != "text_delta"]
            assert kinds[0] == "transcription" and sorted(kinds[1:]) == ["error", "text"], kinds
            error = next(m for m in seen if m["type"] == "error")
            assert error["content"] == "speech synthesis failed: the model 'tts' does not exist"
            assert error["code"] == "model_not_found"
            assert next(m for m in seen if m["type"] == "text")["content"].strip() == SPEECH
            await voice.scheduler.undeploy("asr")
            await wait_until(lambda: not voice.scheduler.routes("asr"))
            seen = await turn(ws, audio_message("And now?"))
            assert [m["type"] for m in seen] == ["error"] and "'asr' does not exist" in seen[0]["content"]
            seen = await turn(ws, {"type": "text", "content": "Typed instead."}, audio_after_text=False)
            assert seen[-1]["type"] == "text" and seen[-1]["content"].strip() == "Typed instead."
    session = voice.manager.get(created["session_id"], "tenant-a")
    assert [c for _, c in session.history.turns][::2] == [SPEECH, "Typed instead."]


async def test_the_group_is_placed_on_the_node_with_all_three_stages(voice):
    for _ in range(4):  # text first: the LLM is placed before any audio, still on the node with ASR
        created = await create(voice, tutor_id=1)
        with trio.fail_after(30):
            async with socket(voice, created) as ws:
                await turn(ws, {"type": "text", "content": "Good morning to you."})
        session = voice.manager.get(created["session_id"], "tenant-a")
        assert {s: p.node_id for s, p in session.group.pins.items()} == {"llm": "n1", "tts": "n1"}


async def test_losing_one_replica_re_pins_that_stage_only(voice):
    created = await create(voice, tutor_id=1)
    session = voice.manager.get(created["session_id"], "tenant-a")
    with trio.fail_after(30):
        async with socket(voice, created) as ws:
            await turn(ws, audio_message("First turn here."))
            before = {s: (p.replica_id, p.node_id) for s, p in session.group.pins.items()}
            assert {n for _, n in before.values()} == {"n1"}
            await voice.scheduler.deploy("tts", replicas=1, nodes=("n2",))  # the TTS replica on n1 goes
            await wait_until(lambda: [r.node_id for r in voice.scheduler.routes("tts")] == ["n2"])
            for _ in range(2):
                seen = await turn(ws, audio_message("Second turn here."))
                assert any(m["type"] == "audio" for m in seen)
                after = {s: (p.replica_id, p.node_id) for s, p in session.group.pins.items()}
                assert after["asr"] == before["asr"] and after["llm"] == before["llm"]
                assert after["tts"][1] == "n2"


async def echo_active(voice) -> int:
    async with httpx.AsyncClient(base_url=voice.echo_url) as worker:
        return (await worker.get("/health")).json()["active_requests"]


@pytest.mark.parametrize("how", ["delete", "cancel"])
@pytest.mark.parametrize("stage", ["asr", "llm+tts"])
async def test_delete_or_cancel_stops_every_stage_within_a_second(voice, stage, how):
    created = await create(voice, tutor_id=1)
    long_speech = " ".join(f"Sentence number {i} is here." for i in range(200))
    with trio.fail_after(30):
        async with socket(voice, created) as ws:
            if stage == "asr":
                voice.asr.delay_s = 60
                await ws.send_message(json.dumps(audio_message(long_speech)))
                await wait_until(lambda: voice.asr.active == 1)
            else:
                voice.tts.delay_s = 60
                await ws.send_message(json.dumps(audio_message(long_speech)))
                await wait_until(lambda: voice.tts.active == 1)  # speaking sentence 1, the LLM still going
                assert await echo_active(voice) == 1
            if how == "delete":
                r = await voice.client.delete(f"/v1/sessions/{created['session_id']}", headers=AUTH)
                assert r.status_code == 204
            else:
                await ws.send_message(json.dumps({"type": "cancel"}))
            with trio.fail_after(1):
                while voice.asr.active or voice.tts.active or await echo_active(voice):  # noqa: ASYNC110
                    await trio.sleep(0.02)
            if how == "delete":
                while (message := json.loads(await ws.get_message()))["type"] != "error":
                    pass
                assert message["content"] == "session deleted"
                return
            voice.asr.delay_s = voice.tts.delay_s = 0  # the session goes on after a cancel
            while not json.loads(await ws.get_message()).get("cancelled"):
                pass
            seen = await turn(ws, audio_message("One more try."))
            assert seen[0]["content"] == "One more try." and any(m["type"] == "audio" for m in seen)
