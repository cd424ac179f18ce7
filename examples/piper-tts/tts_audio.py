"""Encoders for speech as it is synthesized: raw PCM, streamed WAV, and MP3 or Opus through PyAV.

Each encoder turns 16-bit mono PCM pieces into bytes that can be sent at once: `start()`
(the header), `feed(pcm)` per sentence, `finish()` (the tail). PyAV's wheels carry FFmpeg with
LAME and libopus, so no system library is needed. `bytes_per_second` and `header_bytes` tell
the gateway how many seconds of audio a reply of N bytes holds (exact for wav and pcm; for
mp3 and opus, encoded at a constant bit rate, within a few percent).
"""

from __future__ import annotations

import io
import struct
from typing import Any

FORMATS = ("mp3", "opus", "wav", "pcm")
CONTENT_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "wav": "audio/wav", "pcm": "audio/pcm"}
MP3_BIT_RATE = 64_000
OPUS_BIT_RATE = 32_000
WAV_HEADER_BYTES = 44
STREAMING_SIZE = 0xFFFFFFFF  # a WAV whose length is not known when its header leaves


class Encoder:
    """Raw 16-bit little-endian mono PCM (format "pcm"); the base of the others."""

    header_bytes = 0

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.bytes_per_second = 2.0 * sample_rate

    def start(self) -> bytes:
        """What goes out before the first sentence."""
        return b""

    def feed(self, pcm: bytes) -> bytes:
        """The bytes for one more piece of PCM."""
        return pcm

    def finish(self) -> bytes:
        """What goes out after the last sentence."""
        return b""


class WavEncoder(Encoder):
    """A WAV stream: a 44-byte header whose sizes say "unknown", then the PCM."""

    header_bytes = WAV_HEADER_BYTES

    def start(self) -> bytes:
        """The RIFF/WAVE header (PCM, mono, 16 bits)."""
        rate = self.sample_rate
        return (b"RIFF" + struct.pack("<I", STREAMING_SIZE) + b"WAVEfmt "
                + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
                + b"data" + struct.pack("<I", STREAMING_SIZE))


class _Sink(io.RawIOBase):
    """A write-only file that keeps what was written until it is drained."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.buffer += data
        return len(data)

    def drain(self) -> bytes:
        out = bytes(self.buffer)
        self.buffer.clear()
        return out


class AvEncoder(Encoder):
    """MP3 (LAME) or Opus in Ogg (libopus), at a constant bit rate, through PyAV."""

    def __init__(self, sample_rate: int, response_format: str) -> None:
        super().__init__(sample_rate)
        import av

        self._av = av
        self._sink = _Sink()
        container_format, codec, rate, bit_rate = (
            ("mp3", "libmp3lame", sample_rate, MP3_BIT_RATE) if response_format == "mp3"
            else ("ogg", "libopus", 48_000, OPUS_BIT_RATE))
        self._container = av.open(self._sink, "w", format=container_format)
        self._stream = self._container.add_stream(codec, rate=rate)
        self._stream.layout = "mono"
        self._stream.bit_rate = bit_rate
        if codec == "libopus":
            self._stream.options = {"vbr": "off"}
        self.bytes_per_second = bit_rate / 8

    def feed(self, pcm: bytes) -> bytes:
        """Encode a piece of PCM; returns the bytes the container has written so far."""
        import numpy as np

        frame = self._av.AudioFrame.from_ndarray(np.frombuffer(pcm, dtype=np.int16).reshape(1, -1),
                                                 format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        return self._sink.drain()

    def finish(self) -> bytes:
        """Flush the encoder and close the container; its last bytes."""
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._sink.drain()


def encoder_for(response_format: str, sample_rate: int) -> Encoder:
    """The encoder of one of FORMATS."""
    if response_format == "wav":
        return WavEncoder(sample_rate)
    if response_format == "pcm":
        return Encoder(sample_rate)
    return AvEncoder(sample_rate, response_format)
