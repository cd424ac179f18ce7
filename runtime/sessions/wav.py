"""A session's reply audio as whole WAV files: the sizes a streamed WAV header leaves open, filled in.

A TTS worker streams WAV with the "unknown length" sizes (0xFFFFFFFF) in its header, as OpenAI's
does; a session sends each sentence's audio as one message, so its sizes are known and written.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER_SEARCH = 512  # the `data` chunk starts within the first few chunks of any WAV a TTS writes


@dataclass(frozen=True)
class WavInfo:
    """What a client needs to play the audio: the sample rate, channels and bits per sample."""

    sample_rate: int
    channels: int
    bits: int


def complete_wav(data: bytes) -> bytes:
    """`data` with its RIFF and data sizes set to what it holds; anything not a WAV as it is."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return data
    at = data.find(b"data", 12, HEADER_SEARCH)
    if at < 0 or len(data) < at + 8:
        return data
    out = bytearray(data)
    out[4:8] = struct.pack("<I", len(data) - 8)
    out[at + 4:at + 8] = struct.pack("<I", len(data) - at - 8)
    return bytes(out)


def wav_info(data: bytes) -> WavInfo | None:
    """The format of a WAV's `fmt ` chunk, or None when `data` is not a WAV."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    at = data.find(b"fmt ", 12, HEADER_SEARCH)
    if at < 0 or len(data) < at + 24:
        return None
    _, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[at + 8:at + 24])
    return WavInfo(rate, channels, bits)
