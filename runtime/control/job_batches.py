"""Batches of job messages: many `job_attempt`s (plane -> node) or `job_report`s (node -> plane)
in one control message, for a peer that announced the `job_batch` feature.

A cron burst sends hundreds of attempts in one scheduling round, a few to each node: one
message per node and round instead of one per attempt saves a WebSocket send on one side and
a receive and a wake-up on the other each time. A batch holds at most MAX_ENTRIES entries and
MAX_BATCH_BYTES of them, well under the control message's MAX_MESSAGE_BYTES; `pack_*` splits
what is larger, and a lone entry goes as the plain message.

Unpacking checks the envelope (a JSON array of at most MAX_ENTRIES) and then each entry on its
own: a bad entry is refused with a reason naming its index (and the attempt, when it names
one), the others are handled as if they had come one by one, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import msgspec

from runtime.control.messages import JobAttempt, JobAttempts, JobReport, JobReports

MAX_ENTRIES = 256
MAX_BATCH_BYTES = 512 * 1024

Key = tuple[str, str, int, int | None]  # run, step, attempt, shard
T = TypeVar("T", JobAttempt, JobReport)


class _Named(msgspec.Struct):
    """What names an attempt, read from an entry that is otherwise malformed."""

    run_id: str
    step: str
    attempt: int
    epoch: int
    shard: int | None = None


@dataclass(frozen=True)
class Refused:
    """A batch entry that was refused: its index, why, and its attempt (and epoch) when it names one."""

    index: int
    reason: str
    key: Key | None = None
    epoch: int = 0


_encoder = msgspec.json.Encoder()
_entries = msgspec.json.Decoder(list[msgspec.Raw])
_attempt = msgspec.json.Decoder(JobAttempt)
_report = msgspec.json.Decoder(JobReport)
_named = msgspec.json.Decoder(_Named)


def _chunks(items: Sequence[T]) -> list[list[tuple[T, bytes]]]:
    """The items with their encodings, in runs of at most MAX_ENTRIES entries and MAX_BATCH_BYTES."""
    chunks: list[list[tuple[T, bytes]]] = []
    size = 0
    for item in items:
        encoded = _encoder.encode(item)
        if not chunks or len(chunks[-1]) >= MAX_ENTRIES or size + len(encoded) > MAX_BATCH_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append((item, encoded))
        size += len(encoded) + 1
    return chunks


def _raw(chunk: list[tuple[T, bytes]]) -> msgspec.Raw:
    return msgspec.Raw(b"[" + b",".join(encoded for _, encoded in chunk) + b"]")


def pack_attempts(attempts: Sequence[JobAttempt]) -> list[JobAttempt | JobAttempts]:
    """The messages that carry `attempts` in order: batches, and a lone attempt as itself."""
    return [JobAttempts(_raw(chunk)) if len(chunk) > 1 else chunk[0][0] for chunk in _chunks(attempts)]


def pack_reports(reports: Sequence[JobReport]) -> list[JobReport | JobReports]:
    """The messages that carry `reports` in order: batches, and a lone report as itself."""
    return [JobReports(_raw(chunk)) if len(chunk) > 1 else chunk[0][0] for chunk in _chunks(reports)]


def unpack_attempts(batch: JobAttempts) -> tuple[list[JobAttempt], list[Refused]]:
    """The batch's well-formed attempts in order, and the entries refused (all, if the envelope is bad)."""
    return _unpack(batch.attempts, _attempt, "job_attempts")


def unpack_reports(batch: JobReports) -> tuple[list[JobReport], list[Refused]]:
    """The batch's well-formed reports in order, and the entries refused (all, if the envelope is bad)."""
    return _unpack(batch.reports, _report, "job_reports")


def _unpack(raw: msgspec.Raw, decoder: msgspec.json.Decoder[T], kind: str) -> tuple[list[T], list[Refused]]:
    try:
        entries = _entries.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return [], [Refused(-1, f"a {kind} batch must be a JSON array of messages, got {bytes(raw)[:60]!r}")]
    if len(entries) > MAX_ENTRIES:
        return [], [Refused(-1, f"a {kind} batch of {len(entries)} entries exceeds {MAX_ENTRIES}")]
    good: list[T] = []
    refused: list[Refused] = []
    for index, entry in enumerate(entries):
        try:
            good.append(decoder.decode(entry))
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            try:
                named = _named.decode(entry)
            except (msgspec.ValidationError, msgspec.DecodeError):
                refused.append(Refused(index, f"{kind} entry {index} is invalid: {exc}"))
                continue
            key = (named.run_id, named.step, named.attempt, named.shard)
            refused.append(Refused(index, f"{kind} entry {index} is invalid: {exc}", key, named.epoch))
    return good, refused
