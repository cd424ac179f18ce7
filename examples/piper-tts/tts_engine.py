"""Synthesis off the event loop: one Piper voice, one text at a time, sentence by sentence.

A request waits for the engine's CapacityLimiter (one slot: onnxruntime already uses every
core for one sentence), then a worker thread synthesizes the text one sentence at a time
and hands each sentence's encoded audio to the event loop as soon as it exists, so the
first audio leaves before the last sentence is spoken. Between sentences the thread checks
a cancel flag: a client that goes away stops synthesis within one sentence.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio
from threadstream import open_stream
from tts_audio import Encoder


class TtsEngine:
    """Runs syntheses on one voice, one at a time, in a worker thread."""

    max_concurrency = 1

    def __init__(self, voice: Any) -> None:
        self.voice = voice  # piper.PiperVoice
        self.sample_rate: int = voice.config.sample_rate
        self.length_scale: float = voice.config.length_scale or 1.0
        self.limiter = trio.CapacityLimiter(self.max_concurrency)
        self.audio_seconds = 0.0

    @property
    def active_requests(self) -> int:
        """Requests holding the voice now (0 or 1)."""
        return self.limiter.statistics().borrowed_tokens

    @property
    def queued_requests(self) -> int:
        """Requests waiting for the voice."""
        return self.limiter.statistics().tasks_waiting

    @asynccontextmanager
    async def open_speech(self, text: str, speed: float, encoder: Encoder
                          ) -> AsyncIterator[trio.MemoryReceiveChannel[bytes]]:
        """Speak `text`; yields a channel of encoded audio (header, one piece per sentence, tail).

        Leaving the block early stops synthesis after the sentence in progress.
        """
        async with open_stream(self.limiter, partial(self._work, text, speed, encoder)) as pieces:
            yield pieces

    def _work(self, text: str, speed: float, encoder: Encoder, deliver: Callable[[Any], None],
              cancel: threading.Event) -> None:
        """The synthesis loop; runs in a worker thread."""
        from piper import SynthesisConfig

        config = SynthesisConfig(length_scale=self.length_scale / speed)
        deliver(encoder.start())
        for chunk in self.voice.synthesize(text, config):
            if cancel.is_set():
                return
            pcm = chunk.audio_int16_bytes
            self.audio_seconds += len(pcm) / (2 * self.sample_rate)
            piece = encoder.feed(pcm)
            if piece:
                deliver(piece)
        deliver(encoder.finish())
