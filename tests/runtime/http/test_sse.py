"""sse_data and sse_batches: events from a byte stream, one list per chunk for relays."""

from runtime.http.sse import sse_batches, sse_data


async def chunks(*parts: bytes):  # type: ignore[no-untyped-def]
    for part in parts:
        yield part


async def test_events_completed_by_one_chunk_come_together() -> None:
    parts = (b"data: a\n\ndata: b\n\nda", b"ta: c\n\n", b"data: d\r\n\r\ndata: e")
    assert [batch async for batch in sse_batches(chunks(*parts))] == [["a", "b"], ["c"], ["d"], ["e"]]
    assert [data async for data in sse_data(chunks(*parts))] == ["a", "b", "c", "d", "e"]


async def test_a_chunk_without_a_whole_event_yields_nothing() -> None:
    assert [batch async for batch in sse_batches(chunks(b"data: x", b"y\n", b"\n"))] == [["xy"]]
