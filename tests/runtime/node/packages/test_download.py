"""The downloader against a misbehaving hub: resume, restart, stall, overflow, corruption."""

import hashlib
import os

import pytest
import trio

from runtime.node import BlobMismatch, install
from tests.runtime.node.packages.fakehub import send_blob

BIG = os.urandom(2 << 20)
DIGEST = hashlib.sha256(BIG).hexdigest()
HALF = 1 << 20


def publish(hub):
    hub.publish("echo", "1.0.0", {"main.py": b"print(1)\n", "models/m.bin": BIG})


def stored(layout):
    return (layout.version_dir("echo", "1.0.0") / "models/m.bin").read_bytes()


async def test_resume_continues_a_cut_transfer_with_range_and_if_range(hub, layout, options):
    async def cut_once(hub, stream, req, data, attempt):
        await send_blob(stream, req, data, f'"{DIGEST}"', cut_after=HALF if attempt == 1 else None)

    publish(hub)
    hub.faults[DIGEST] = cut_once
    with trio.fail_after(20):
        report = await install(layout, hub.url, "echo", "1.0.0", options=options)
    first, second = hub.blob_requests(DIGEST)
    assert "range" not in first.headers
    assert second.headers["range"] == f"bytes={HALF}-"
    assert second.headers["if-range"] == f'"{DIGEST}"'
    assert stored(layout) == BIG
    assert report.downloaded_bytes == len(BIG) + len(b"print(1)\n")  # nothing fetched twice


async def test_partial_left_by_an_earlier_run_is_resumed(hub, layout, options):
    publish(hub)
    layout.partial_path(DIGEST).write_bytes(BIG[:HALF])
    with trio.fail_after(20):
        report = await install(layout, hub.url, "echo", "1.0.0", options=options)
    (req,) = hub.blob_requests(DIGEST)
    assert req.headers["range"] == f"bytes={HALF}-"
    assert report.resumed_bytes == HALF
    assert stored(layout) == BIG


async def test_a_200_to_a_range_request_restarts_and_never_appends(hub, layout, options):
    async def ignores_range(hub, stream, req, data, attempt):
        await send_blob(stream, req, data, f'"{DIGEST}"', honour_range=False)

    publish(hub)
    layout.partial_path(DIGEST).write_bytes(BIG[:HALF])
    hub.faults[DIGEST] = ignores_range
    with trio.fail_after(20):
        await install(layout, hub.url, "echo", "1.0.0", options=options)
    assert len(hub.blob_requests(DIGEST)) == 1
    assert stored(layout) == BIG


async def test_a_changed_etag_restarts_the_blob(hub, layout, options):
    # First answer is cut with ETag A; the resume gets a 206 under ETag B (If-Range ignored).
    async def etag_changes(hub, stream, req, data, attempt):
        if attempt == 1:
            await send_blob(stream, req, data, '"A"', cut_after=HALF)
        else:
            await send_blob(stream, req, data, '"B"')

    publish(hub)
    hub.faults[DIGEST] = etag_changes
    with trio.fail_after(20):
        await install(layout, hub.url, "echo", "1.0.0", options=options)
    reqs = hub.blob_requests(DIGEST)
    assert [r.headers.get("range") for r in reqs] == [None, f"bytes={HALF}-", None]
    assert reqs[1].headers["if-range"] == '"A"'
    assert stored(layout) == BIG


async def test_a_trickling_transfer_is_aborted_and_retried(hub, layout, options):
    async def trickles(hub, stream, req, data, attempt):
        if attempt == 1:
            await send_blob(stream, req, data, f'"{DIGEST}"', trickle=(50, 0.1))
        else:
            await send_blob(stream, req, data, f'"{DIGEST}"')

    publish(hub)
    hub.faults[DIGEST] = trickles
    with trio.fail_after(20):
        await install(layout, hub.url, "echo", "1.0.0", options=options)
    reqs = hub.blob_requests(DIGEST)
    assert len(reqs) == 2 and reqs[1].headers["range"].startswith("bytes=")
    assert stored(layout) == BIG


async def test_more_bytes_than_declared_are_never_written(hub, layout, options):
    async def overflows(hub, stream, req, data, attempt):
        await send_blob(stream, req, data, f'"{DIGEST}"', extra=b"X" * 100_000,
                        declared=len(data) + 100_000)

    publish(hub)
    hub.faults[DIGEST] = overflows
    with trio.fail_after(20):
        await install(layout, hub.url, "echo", "1.0.0", options=options)
    assert stored(layout) == BIG
    assert (layout.root / "blobs/sha256" / DIGEST[:2] / DIGEST).stat().st_size == len(BIG)


async def test_a_corrupt_blob_is_refetched(hub, layout, options):
    async def corrupt_once(hub, stream, req, data, attempt):
        bad = data[:-1] + bytes([data[-1] ^ 1]) if attempt == 1 else data
        await send_blob(stream, req, bad, f'"{DIGEST}"')

    publish(hub)
    hub.faults[DIGEST] = corrupt_once
    with trio.fail_after(20):
        await install(layout, hub.url, "echo", "1.0.0", options=options)
    reqs = hub.blob_requests(DIGEST)
    assert len(reqs) == 2 and "range" not in reqs[1].headers
    assert stored(layout) == BIG


async def test_an_always_corrupt_blob_fails_and_leaves_current_alone(hub, layout, options):
    async def corrupt(hub, stream, req, data, attempt):
        await send_blob(stream, req, data[::-1], f'"{DIGEST}"')

    hub.publish("echo", "0.9.0", {"main.py": b"print(0)\n"})
    with trio.fail_after(20):
        await install(layout, hub.url, "echo", "0.9.0", options=options)
        publish(hub)
        hub.faults[DIGEST] = corrupt
        with pytest.raises(BlobMismatch, match=DIGEST):
            await install(layout, hub.url, "echo", "1.0.0", options=options)
    assert len(hub.blob_requests(DIGEST)) == options.policy.attempts
    assert layout.current_version("echo") == "0.9.0"
    assert not layout.version_dir("echo", "1.0.0").exists()
    assert not (layout.root / "blobs/sha256" / DIGEST[:2] / DIGEST).exists()


async def test_a_server_that_never_answers_is_given_up_on_and_retried(hub, layout, options):
    async def silent_once(hub, stream, req, data, attempt):
        if attempt == 1:
            await trio.sleep_forever()
        await send_blob(stream, req, data, f'"{DIGEST}"')

    publish(hub)
    hub.faults[DIGEST] = silent_once
    with trio.fail_after(20):
        await install(layout, hub.url, "echo", "1.0.0", options=options)
    assert len(hub.blob_requests(DIGEST)) == 2
    assert stored(layout) == BIG


async def test_a_disk_write_error_fails_the_install_at_once(hub, layout, options, monkeypatch):
    from runtime.node.packages import download

    def full(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(download._Partial, "store", full)
    publish(hub)
    with trio.fail_after(20), pytest.raises(OSError, match="No space left"):
        await install(layout, hub.url, "echo", "1.0.0", options=options)
    # Not retried. Which blob hits the full disk first depends on how the concurrent fetches
    # interleave, so: some blob was asked for, and none twice.
    fetched = [r.path for r in hub.log if r.path.startswith("/blobs/")]
    assert fetched and len(fetched) == len(set(fetched))
    assert layout.current_version("echo") is None
