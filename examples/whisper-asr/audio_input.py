"""Uploaded audio (WAV, FLAC, OGG/Opus/Vorbis, MP3, M4A, WebM...) to 16 kHz mono float32 samples.

PyAV's wheels carry their own FFmpeg libraries, so no system ffmpeg is needed. Decoding stops
as soon as the audio runs past the duration limit, so a long file never fills memory.
"""

from __future__ import annotations

import io
import itertools

import av
import numpy as np

SAMPLE_RATE = 16_000  # what Whisper takes


class BadAudio(Exception):
    """An upload that is not audio the worker can use; `code` is the OpenAI error code."""

    def __init__(self, message: str, code: str = "invalid_audio") -> None:
        super().__init__(message)
        self.code = code


def decode(data: bytes, *, max_seconds: float) -> np.ndarray:
    """The samples of `data` at SAMPLE_RATE, mono, in [-1, 1]; BadAudio says what is wrong."""
    if not data:
        raise BadAudio("the audio file is empty")
    limit = int(max_seconds * SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise BadAudio("the file has no audio stream")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            frames = container.decode(container.streams.audio[0])
            for frame in itertools.chain(frames, [None]):  # None flushes the resampler
                for out in resampler.resample(frame):
                    samples = out.to_ndarray().reshape(-1)
                    total += len(samples)
                    if total > limit:
                        raise BadAudio(f"the audio is longer than {max_seconds:g} s, this worker's limit",
                                       "audio_too_long")
                    chunks.append(samples)
    except BadAudio:
        raise
    except (av.error.FFmpegError, ValueError, OSError, EOFError, RuntimeError) as exc:
        raise BadAudio(f"the file could not be decoded as audio ({_reason(exc)}); send WAV, FLAC, "
                       "OGG, MP3, M4A or WebM") from None
    if total == 0:
        raise BadAudio("the file holds no audio samples")
    return np.concatenate(chunks).astype(np.float32) / 32768.0


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
