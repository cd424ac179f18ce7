"""Server-sent events read from a byte stream, for relays that need the events themselves."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

MAX_EVENT_BYTES = 1024 * 1024


class SSEError(ValueError):
    """The stream broke the SSE framing (an event larger than the limit)."""


async def sse_data(chunks: AsyncIterable[bytes], *, max_event_bytes: int = MAX_EVENT_BYTES) -> AsyncIterator[str]:
    """Yield the `data` of each event (multi-line data joined with newlines), in order."""
    async for batch in sse_batches(chunks, max_event_bytes=max_event_bytes):
        for data in batch:
            yield data


async def sse_batches(chunks: AsyncIterable[bytes], *,
                      max_event_bytes: int = MAX_EVENT_BYTES) -> AsyncIterator[list[str]]:
    """Like `sse_data`, but the events one chunk completes come as one list.

    A relay that forwards them as one message sends fewer when the source is ahead of
    it, and delays nothing: each list is yielded as soon as its chunk arrives.
    """
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        batch = []
        while True:
            cut = _event_end(buffer)
            if cut is None:
                break
            event, buffer = buffer[:cut[0]], buffer[cut[1]:]
            data = _data_of(event)
            if data is not None:
                batch.append(data)
        if batch:
            yield batch
        if len(buffer) > max_event_bytes:
            raise SSEError(f"server-sent event larger than {max_event_bytes} bytes")
    if buffer.strip():
        data = _data_of(buffer)
        if data is not None:
            yield [data]


def _event_end(buffer: bytes) -> tuple[int, int] | None:
    found = [(i, i + len(sep)) for sep in (b"\n\n", b"\r\n\r\n") if (i := buffer.find(sep)) >= 0]
    return min(found) if found else None


def _data_of(event: bytes) -> str | None:
    lines = [line[5:].removeprefix(b" ") for line in event.replace(b"\r\n", b"\n").split(b"\n")
             if line.startswith(b"data:")]
    return b"\n".join(lines).decode("utf-8", "replace") if lines else None
