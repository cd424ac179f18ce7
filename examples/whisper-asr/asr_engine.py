"""Transcription off the event loop: one Whisper model, one file at a time, segment by segment.

A request waits for the engine's CapacityLimiter (one slot: CTranslate2 already uses every
thread it was given for one file), then a worker thread runs faster-whisper. Between segments
(each a window of up to 30 s of audio) the thread checks a cancel flag, so a request whose
client went away stops within one window and frees the slot.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import numpy as np
import trio
from audio_input import SAMPLE_RATE
from threadstream import open_stream

# OpenAI's temperature 0: start greedy, retry hotter where the text looks wrong (Whisper's own rule).
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


class Model(Protocol):
    """What the engine needs of faster_whisper.WhisperModel."""

    def transcribe(self, audio: np.ndarray, **options: Any) -> tuple[Any, Any]: ...


@dataclass(frozen=True)
class Options:
    """How to transcribe one file."""

    task: str = "transcribe"  # or "translate" (to English)
    language: str | None = None  # None: detected
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False


@dataclass
class Transcript:
    """What the model heard."""

    task: str
    language: str
    duration: float
    segments: list[Any] = field(default_factory=list)
    cancelled: bool = False

    @property
    def text(self) -> str:
        """The whole text, as OpenAI gives it (segments joined, outer spaces stripped)."""
        return "".join(s.text for s in self.segments).strip()


class AsrEngine:
    """Runs transcriptions on one model, one at a time, in a worker thread."""

    max_concurrency = 1

    def __init__(self, model: Model, *, beam_size: int = 5) -> None:
        self.model = model
        self.beam_size = beam_size
        self.limiter = trio.CapacityLimiter(self.max_concurrency)
        self.audio_seconds = 0.0
        self.cancelled = 0  # transcriptions stopped early because their client went away

    @property
    def active_requests(self) -> int:
        """Requests holding the model now (0 or 1)."""
        return self.limiter.statistics().borrowed_tokens

    @property
    def queued_requests(self) -> int:
        """Requests waiting for the model."""
        return self.limiter.statistics().tasks_waiting

    async def transcribe(self, audio: np.ndarray, options: Options) -> Transcript:
        """Transcribe (or translate) `audio`; cancelling this stops the model within one window."""
        transcript = Transcript(options.task, options.language or "", len(audio) / SAMPLE_RATE)
        async with open_stream(self.limiter, partial(self._work, audio, options)) as items:
            async for item in items:
                if isinstance(item, str):
                    transcript.language = item
                else:
                    transcript.segments.append(item)
        self.audio_seconds += transcript.duration
        return transcript

    def _work(self, audio: np.ndarray, options: Options, deliver: Callable[[Any], None],
              cancel: threading.Event) -> None:
        """The model loop; runs in a worker thread."""
        temperature = (FALLBACK_TEMPERATURES if options.temperature == 0 else options.temperature)
        segments, info = self.model.transcribe(
            audio, task=options.task, language=options.language, initial_prompt=options.prompt,
            temperature=temperature, beam_size=self.beam_size, word_timestamps=options.word_timestamps)
        deliver(info.language)
        try:
            for segment in segments:
                if cancel.is_set():
                    self.cancelled += 1
                    return
                deliver(segment)
        finally:
            close = getattr(segments, "close", None)
            if close is not None:
                close()
