"""Voice-turn latency of a seed 002 session: end of the user's audio to the first byte of reply audio.

    python bench/_voice_turn.py [--turns 3] [--max-tokens 48]

`voice_turn` measures one turn on an open session WebSocket: it sends the user's audio as one
`{"type": "audio"}` message and times, from the moment that message is written (the end of
the user's audio), each answer: `transcription` (ASR done), the first `text_delta` (the LLM's
first token), the whole `text` (the LLM done) and the first `audio` (the first byte of reply
audio: the TTS of the first sentence). `first_audio_before_llm_done` says whether the first
reply audio left while the LLM was still generating (the sentence-by-sentence pipeline).

Run as a script it starts a real `flowctl up` (plane and local node) with the three real
bundles (whisper-asr, llama-chat's Gemma 3 270M, piper-tts; examples/demo_voice.py), speaks a
question with Piper through the gateway and times `--turns` turns in one session (the first
includes the models' warm-up), printing each and the medians. bench/speech.py --voice calls
`measure(runs)`, which returns the same lines. Everything it starts is stopped on the way out.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PROMPT = "You are a friendly English tutor. Answer in one or two short sentences."
MAX_MESSAGE_BYTES = 64 << 20  # a long sentence's WAV, base64: far above any one reply sentence
TURN_TIMEOUT_S = 600.0


@dataclass
class VoiceTurn:
    """One measured turn: what was said and heard, and when (seconds after the end of the user's audio)."""

    transcription: str = ""
    reply: str = ""
    sentences: list[str] = field(default_factory=list)
    audio: list[bytes] = field(default_factory=list)  # one whole WAV per spoken sentence
    errors: list[str] = field(default_factory=list)
    asr_s: float | None = None  # the transcription arrived
    llm_first_s: float | None = None  # the first text_delta
    llm_done_s: float | None = None  # the whole text
    tts_first_s: float | None = None  # the first reply audio
    done_s: float | None = None  # the last reply audio (or the text, without TTS)

    @property
    def first_audio_before_llm_done(self) -> bool:
        """Whether the first reply audio left before the LLM had finished its reply."""
        return self.tts_first_s is not None and self.llm_done_s is not None and self.tts_first_s < self.llm_done_s

    def stages(self) -> dict[str, float | None]:
        """Each stage's own duration: ASR, LLM to first token, LLM generation, TTS of the first sentence."""
        def gap(a: float | None, b: float | None) -> float | None:
            return b - a if a is not None and b is not None else None

        return {"asr": self.asr_s, "llm_first_token": gap(self.asr_s, self.llm_first_s),
                "llm_rest": gap(self.llm_first_s, self.llm_done_s),
                "tts_first_audio": gap(self.llm_first_s, self.tts_first_s)}


def _spoken_all(turn: VoiceTurn) -> bool:
    """The reply's text is complete and every sentence of it has been spoken."""
    return turn.llm_done_s is not None and _letters("".join(turn.sentences)) == _letters(turn.reply)


def _letters(text: str) -> str:
    """`text` without white space: sentences are spoken stripped, line breaks included."""
    return "".join(text.split())


async def voice_turn(ws: Any, wav: bytes, *, fmt: str = "wav", speaks: bool = True,
                     on_message: Callable[[dict[str, Any], float], None] | None = None,
                     timeout_s: float = TURN_TIMEOUT_S) -> VoiceTurn:
    """Send `wav` on the session socket `ws` (trio-websocket) and time the answers (see the module docstring).

    `speaks` False: the session has no TTS model, the turn ends with the text. `on_message`
    sees each server message and its time. Error handling: an `error` message ends the turn
    (it is in `errors`); TimeoutError after `timeout_s`.
    """
    import trio

    turn = VoiceTurn()
    await ws.send_message(json.dumps({"type": "audio", "data": base64.b64encode(wav).decode(), "format": fmt}))
    began = time.perf_counter()
    with trio.fail_after(timeout_s):
        while True:
            message = json.loads(await ws.get_message())
            now = time.perf_counter() - began
            if on_message is not None:
                on_message(message, now)
            kind = message.get("type")
            if kind == "transcription":
                turn.transcription, turn.asr_s = message["content"], now
            elif kind == "text_delta" and turn.llm_first_s is None:
                turn.llm_first_s = now
            elif kind == "text":
                turn.reply, turn.llm_done_s = message["content"], now
                turn.llm_first_s = turn.llm_first_s if turn.llm_first_s is not None else now
            elif kind == "audio":
                turn.tts_first_s = now if turn.tts_first_s is None else turn.tts_first_s
                turn.sentences.append(message["content"])
                turn.audio.append(base64.b64decode(message["data"]))
            elif kind == "error":
                turn.errors.append(message["content"])
                turn.done_s = now
                return turn
            if turn.llm_done_s is not None and (not speaks or _spoken_all(turn)):
                turn.done_s = now
                return turn


def joined_wav(parts: list[bytes]) -> bytes:
    """The sentences' WAV files as one (their format must agree: piper's is 22,050 Hz mono 16-bit)."""
    import io
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as target:
        for i, part in enumerate(parts):
            with wave.open(io.BytesIO(part)) as source:
                if i == 0:
                    target.setparams(source.getparams())
                target.writeframes(source.readframes(source.getnframes()))
    return out.getvalue()


def format_turn(turn: VoiceTurn) -> str:
    """One line of timings, in milliseconds after the end of the user's audio."""
    def ms(value: float | None) -> str:
        return f"{value * 1000:7.0f}" if value is not None else "      -"

    stages = turn.stages()
    before = "yes" if turn.first_audio_before_llm_done else "NO"
    return (f"transcription {ms(turn.asr_s)} | first token {ms(turn.llm_first_s)} | first audio "
            f"{ms(turn.tts_first_s)} | LLM done {ms(turn.llm_done_s)} | done {ms(turn.done_s)} ms  "
            f"(ASR {ms(stages['asr']).strip()}, LLM first token {ms(stages['llm_first_token']).strip()}, "
            f"TTS first sentence after first token {ms(stages['tts_first_audio']).strip()} ms; "
            f"first audio before the LLM finished: {before}; {len(turn.sentences)} sentences)")


def summarize(turns: list[VoiceTurn]) -> str:
    """Medians over the turns after the first (the first warms the models), or over all when there is one."""
    warm = turns[1:] or turns

    def med(get: Callable[[VoiceTurn], float | None]) -> str:
        values = [v for v in map(get, warm) if v is not None]
        return f"{statistics.median(values) * 1000:.0f} ms" if values else "-"

    early = sum(t.first_audio_before_llm_done for t in warm)
    return (f"voice turn, median of {len(warm)} warm turn(s): end of user audio -> transcription {med(lambda t: t.asr_s)}"
            f", -> first token {med(lambda t: t.llm_first_s)}, -> first reply audio byte {med(lambda t: t.tts_first_s)}"
            f", -> LLM done {med(lambda t: t.llm_done_s)}, -> done {med(lambda t: t.done_s)}; first audio left before "
            f"the LLM finished in {early}/{len(warm)}")


async def session_turns(url: str, key: str, wav: bytes, models: dict[str, str], *, turns: int,
                        max_tokens: int | None, on_turn: Callable[[VoiceTurn], None] = lambda t: None,
                        on_message: Callable[[dict[str, Any], float], None] | None = None) -> list[VoiceTurn]:
    """Open one voice session on the gateway at `url` and measure `turns` turns of `wav` in it."""
    import httpx
    import trio_websocket

    body: dict[str, Any] = {**models, "system_prompt": SYSTEM_PROMPT, "metadata": {"bench": "voice-turn"}}
    if max_tokens:
        body["max_tokens"] = max_tokens
    async with httpx.AsyncClient(base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:
        r = await client.post("/v1/sessions", json=body)
        if r.status_code != 201:
            raise RuntimeError(f"creating the session answered {r.status_code}: {r.text[:300]}")
        created = r.json()
        results = []
        try:
            async with trio_websocket.open_websocket_url(f"{created['engine_url']}?token={created['engine_token']}",
                                                         max_message_size=MAX_MESSAGE_BYTES) as ws:
                for _ in range(turns):
                    turn = await voice_turn(ws, wav, on_message=on_message)
                    results.append(turn)
                    on_turn(turn)
                    if turn.errors:
                        raise RuntimeError(f"the turn failed: {turn.errors[0]}")
        finally:
            await client.delete(f"/v1/sessions/{created['session_id']}")
    return results


def run_section(*, turns: int = 3, max_tokens: int = 48, question: str | None = None,
                emit: Callable[[str], None] = lambda line: print(line, flush=True)) -> list[VoiceTurn]:
    """Start the voice plane (examples/demo_voice.py), measure `turns` turns, `emit` the figures; stop everything."""
    import tempfile

    import trio

    sys.path.insert(0, str(ROOT / "examples"))
    import demo_voice  # examples/demo_voice.py: the three real bundles behind `flowctl up`

    asked = question or demo_voice.QUESTION
    with tempfile.TemporaryDirectory(prefix="bench-voice-", ignore_cleanup_errors=True) as tmp:
        with demo_voice.voice_plane(Path(tmp)) as ready:
            wav = ready.speak(asked)
            emit(f"voice turns: question {asked!r} ({demo_voice.wav_seconds(wav):.1f} s of speech, piper through "
                 f"the gateway); models {ready.models}; max_tokens {max_tokens}; times after the end of the "
                 "user's audio")
            results = trio.run(lambda: session_turns(ready.url, ready.key, wav, ready.models, turns=turns,
                                                     max_tokens=max_tokens,
                                                     on_turn=lambda t: emit(f"  {format_turn(t)}")))
    emit(f"  heard {results[-1].transcription!r}; replied {results[-1].reply[:80]!r}")
    emit(summarize(results))
    return results


def measure(runs: int = 2, *, max_tokens: int = 48) -> list[str]:
    """The voice-turn figures as lines: one warm-up turn, then `runs` measured ones (bench/speech.py --voice)."""
    lines: list[str] = []
    run_section(turns=runs + 1, max_tokens=max_tokens, emit=lines.append)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=3, help="turns in the session (default 3; the first warms up)")
    parser.add_argument("--max-tokens", type=int, default=48, help="the reply's length limit (default 48)")
    parser.add_argument("--question", default=None, help="what the user says")
    args = parser.parse_args()
    run_section(turns=args.turns, max_tokens=args.max_tokens, question=args.question)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from bench._machine import machine_report

    with machine_report():
        main()
