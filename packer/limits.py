"""Size limits a reader enforces on a bundle it did not make."""

from __future__ import annotations

from dataclasses import dataclass

GiB = 1 << 30
MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Bounds on what a bundle may declare and expand to; exceeding one raises LimitExceeded."""

    max_total_bytes: int = 64 * GiB
    max_file_bytes: int = 32 * GiB
    max_files: int = 100_000
    max_manifest_bytes: int = 16 * MiB
    max_window_log: int = 27  # zstd window: 128 MiB of decoder memory at most
    max_signature_bytes: int = 4096

    @property
    def max_window_size(self) -> int:
        """The zstd window size limit in bytes."""
        return 1 << self.max_window_log
