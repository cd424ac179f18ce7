"""Walk the frame structure of a zstd stream without decompressing it.

libzstd's streaming decoder returns cleanly at end of input even when the last
frame is cut short (a truncated bundle would decompress to a prefix without any
error), and it silently skips skippable frames. So the reader feeds every
compressed byte through a FrameWalker as well: it follows frame headers and
block headers, rejects skippable frames, dictionaries and reserved bits, and at
end of input says whether the stream stopped exactly at a frame boundary.
It costs a few Python operations per 128 KiB block.
"""

from __future__ import annotations

from packer.errors import BundleError, NotABundle

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_FCS_SIZES = (0, 2, 4, 8)
_DID_SIZES = (0, 1, 2, 4)
_MAX_BLOCK = 128 * 1024

# States: what the next bytes are.
_MAGIC, _FHD, _SKIP_HEADER, _BLOCK_HEADER, _PAYLOAD, _CHECKSUM = range(6)


class FrameWalker:
    """Feed compressed chunks in order; `finish()` at end of input checks the last frame ended."""

    def __init__(self) -> None:
        self._state = _MAGIC
        self._need = 4  # bytes still needed for a fixed-size field, or to skip
        self._field = bytearray()
        self._checksum = False
        self._frames = 0
        self._last_block = False
        self.offset = 0  # compressed bytes fed so far
        self._here = 0  # offset of the field being examined

    def feed(self, data: bytes | memoryview) -> None:
        """Advance over `data`; raise BundleError at the first structural error."""
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end:
            if self._state in (_PAYLOAD, _CHECKSUM) and not self._field:
                step = min(self._need, end - pos)
                pos += step
                self._need -= step
                if self._need == 0:
                    self._after_skip()
                continue
            take = min(self._need, end - pos)
            self._field += view[pos:pos + take]
            pos += take
            self._need -= take
            if self._need == 0:
                field = bytes(self._field)
                self._field.clear()
                self._here = self.offset + pos - len(field)
                self._on_field(field)
        self.offset += end

    def check_started(self) -> None:
        """Raise NotABundle unless the input so far began with a zstd frame's magic number."""
        if self._frames == 0 and self._state == _MAGIC:
            raise NotABundle("it does not start with a zstd frame")

    def finish(self) -> None:
        """Raise BundleError unless the input ended exactly after a complete frame."""
        if self._frames == 0 and self._state == _MAGIC:
            raise NotABundle("the file is empty" if self._need == 4 else "it does not start with a zstd frame")
        if self._state != _MAGIC or self._need != 4 or self._field:
            raise BundleError(f"truncated zstd stream (the last frame is incomplete at byte {self.offset})")

    def _after_skip(self) -> None:
        if self._state == _CHECKSUM:
            self._end_frame()
        elif self._last_block:
            self._end_block_sequence()
        else:
            self._state, self._need = _BLOCK_HEADER, 3

    def _end_block_sequence(self) -> None:
        if self._checksum:
            self._state, self._need = _CHECKSUM, 4
        else:
            self._end_frame()

    def _end_frame(self) -> None:
        self._frames += 1
        self._state, self._need = _MAGIC, 4

    def _on_field(self, field: bytes) -> None:
        if self._state == _MAGIC:
            if field == _ZSTD_MAGIC:
                self._state, self._need = _FHD, 1
                return
            if field[1:] == b"\x2a\x4d\x18" and field[0] & 0xF0 == 0x50:
                raise BundleError(f"skippable zstd frame at byte {self._here} (not allowed in a bundle)")
            if not self._frames:
                raise NotABundle("it does not start with a zstd frame")
            raise BundleError(f"trailing data after the last zstd frame (bad magic at byte {self._here})")
        if self._state == _FHD:
            fhd = field[0]
            if fhd & 0x08:
                raise BundleError("corrupt zstd frame header (reserved bit set)")
            if fhd & 0x03:
                raise BundleError("zstd frame needs a dictionary (not allowed in a bundle)")
            single_segment = fhd & 0x20
            self._checksum = bool(fhd & 0x04)
            fcs = _FCS_SIZES[fhd >> 6] or (1 if single_segment else 0)
            rest = (0 if single_segment else 1) + fcs
            if rest:
                self._state, self._need = _SKIP_HEADER, rest
            else:
                self._state, self._need = _BLOCK_HEADER, 3
            return
        if self._state == _SKIP_HEADER:
            self._state, self._need = _BLOCK_HEADER, 3
            return
        # _BLOCK_HEADER
        header = int.from_bytes(field, "little")
        self._last_block = bool(header & 1)
        block_type = (header >> 1) & 3
        size = header >> 3
        if block_type == 3:
            raise BundleError(f"corrupt zstd block (reserved block type at byte {self._here})")
        if size > _MAX_BLOCK:
            raise BundleError(f"corrupt zstd block (size {size} over 128 KiB at byte {self._here})")
        payload = 1 if block_type == 1 else size
        if payload:
            self._state, self._need = _PAYLOAD, payload
        elif self._last_block:
            self._end_block_sequence()
        else:
            self._state, self._need = _BLOCK_HEADER, 3
