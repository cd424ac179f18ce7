"""RotatingLog's size bound and backups, LogTail, and LogPump's batching and drop marker."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from runtime.node.workers.logs import LogPump, LogTail, RotatingLog, read_tail

TIMEOUT = 10


def lines(count: int, width: int = 50) -> bytes:
    return b"".join(f"{i:06d} ".encode() + b"x" * (width - 8) + b"\n" for i in range(count))


def kept(log: RotatingLog) -> bytes:
    """All retained bytes, oldest file first."""
    return b"".join(p.read_bytes() for p in reversed(log.files()))


def test_rotation_keeps_backups_under_the_bound_and_the_newest_bytes(tmp_path):
    log = RotatingLog(tmp_path / "logs" / "svc.log", max_bytes=1000, backups=3)
    data = lines(500)
    for start in range(0, len(data), 777):  # writes that straddle file boundaries
        log.write(data[start:start + 777])
    log.close()
    names = [p.name for p in log.files()]
    assert names == ["svc.log", "svc.log.1", "svc.log.2", "svc.log.3"]
    for path in log.files():
        assert 0 < path.stat().st_size <= 1000
        assert path.read_bytes().endswith(b"\n")  # files end on line boundaries
    assert data.endswith(kept(log))
    assert len(kept(log)) > 3000  # the backups are reasonably full


def test_a_line_longer_than_a_file_is_split(tmp_path):
    log = RotatingLog(tmp_path / "svc.log", max_bytes=100, backups=5)
    log.write(b"a" * 250 + b"\n")
    log.close()
    sizes = [p.stat().st_size for p in reversed(log.files())]
    assert sizes == [100, 100, 51]
    assert kept(log) == b"a" * 250 + b"\n"


def test_no_backups_truncates_in_place(tmp_path):
    log = RotatingLog(tmp_path / "svc.log", max_bytes=200, backups=0)
    data = lines(20)
    log.write(data)
    log.close()
    assert [p.name for p in log.files()] == ["svc.log"]
    assert len(kept(log)) <= 200 and data.endswith(kept(log))


def test_an_existing_file_counts_towards_the_bound(tmp_path):
    path = tmp_path / "svc.log"
    path.write_bytes(b"old run\n" * 10)  # 80 bytes from a previous run
    log = RotatingLog(path, max_bytes=100, backups=1)
    log.write(b"new run\n" * 3)
    log.close()
    # The old file is topped up to a line boundary under the bound, then rotated.
    assert (tmp_path / "svc.log.1").read_bytes() == b"old run\n" * 10 + b"new run\n" * 2
    assert path.read_bytes() == b"new run\n"


def test_bad_bounds_are_refused(tmp_path):
    with pytest.raises(ValueError):
        RotatingLog(tmp_path / "x.log", max_bytes=0)
    with pytest.raises(ValueError):
        RotatingLog(tmp_path / "x.log", backups=-1)


def test_tail_keeps_the_last_lines():
    tail = LogTail(max_bytes=64)
    tail.feed(b"first\nsecond\n")
    assert tail.lines(5) == ["first", "second"]
    tail.feed(lines(10, width=20))
    assert tail.lines(2) == ["000008 " + "x" * 12, "000009 " + "x" * 12]
    assert tail.lines(0) == []
    tail.feed(b"\xff broken utf-8")
    assert tail.lines(1) == ["\ufffd broken utf-8"]


async def test_pump_writes_everything_in_order_with_notes(tmp_path):
    log = RotatingLog(tmp_path / "svc.log", max_bytes=10_000, backups=2)
    pump = LogPump(log)
    send, receive = trio.testing.memory_stream_one_way_pair()
    data = lines(300)
    with trio.fail_after(TIMEOUT):
        pump.note("starting")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump.run, receive)
            for start in range(0, len(data), 1000):
                await send.send_all(data[start:start + 1000])
            await send.aclose()
        pump.note("exited with code 0")
        await pump.aclose()
    assert kept(log) == b"[flowctl] starting\n" + data + b"[flowctl] exited with code 0\n"
    assert pump.tail.lines(1) == ["[flowctl] exited with code 0"]


async def test_pump_drops_what_the_disk_cannot_keep_up_with_and_says_so(tmp_path):
    log = RotatingLog(tmp_path / "svc.log")
    pump = LogPump(log, max_pending=100)
    with trio.fail_after(TIMEOUT):
        # Nothing writes yet: two 38-byte notes fit in 100 bytes, the other three are dropped.
        for i in range(5):
            pump.note(f"note {i} " + "y" * 20)
        await pump.aclose()
    text = log.path.read_text().splitlines()
    assert text == [f"[flowctl] note {i} " + "y" * 20 for i in range(2)] + [
        "[flowctl] 114 bytes of output dropped"]
    assert pump.tail.lines(1) == ["[flowctl] note 4 " + "y" * 20]  # the tail misses nothing


async def test_pump_survives_an_unwritable_log(tmp_path):
    (tmp_path / "blocker").write_text("a file where the log dir should be")
    pump = LogPump(RotatingLog(tmp_path / "blocker" / "svc.log"))
    send, receive = trio.testing.memory_stream_one_way_pair()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump.run, receive)
            await send.send_all(b"still running\n")
            await send.aclose()
        await pump.aclose()
    assert isinstance(pump.write_error, OSError)
    assert pump.tail.lines(1) == ["still running"]


def test_read_tail_reads_only_the_end_cuts_long_lines_and_knows_no_file(tmp_path):
    path = tmp_path / "w.log"
    assert read_tail(path) == ()
    path.write_text("".join(f"line {i}\n" for i in range(10_000)) + "x" * 900 + "\n")
    tail = read_tail(path, lines=3, max_line=500, max_bytes=4096)
    assert tail == ("line 9998", "line 9999", "x" * 500)
