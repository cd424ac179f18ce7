"""Real processes: kill -9 in the middle of a large blob, and two installs at once."""

import hashlib
import json
import os
import subprocess
import sys

import trio

from runtime.node import install, verify_installed
from tests.runtime.node.packages.fakehub import send_blob

BIG = os.urandom(8 << 20)
DIGEST = hashlib.sha256(BIG).hexdigest()


def cli(hub, layout, *args):
    return [sys.executable, "-m", "flowctl", "node", *args, "--data-dir", str(layout.root),
            *(["--hub", hub.url] if args[0] == "install" else [])]


async def wait_for(predicate, *, limit=30.0):
    # Another process's file: there is no event to wait on, so poll under a deadline.
    with trio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.02)


async def test_kill_9_mid_blob_leaves_current_and_the_next_run_resumes(hub, layout, options):
    async def slow_first(hub, stream, req, data, attempt):
        if attempt == 1:  # 2 MiB fast, then a steady trickle the installer never finishes
            await _fast_then_trickle(stream, req, data)
        else:
            await send_blob(stream, req, data, f'"{DIGEST}"')

    hub.publish("echo", "1.0.0", {"main.py": b"print(1)\n"})
    hub.publish("echo", "1.1.0", {"main.py": b"print(2)\n", "models/m.bin": BIG})
    hub.faults[DIGEST] = slow_first
    partial = layout.partial_path(DIGEST)
    with trio.fail_after(60):
        await install(layout, hub.url, "echo", "1.0.0", options=options)
        proc = await trio.lowlevel.open_process(cli(hub, layout, "install", "echo@1.1.0"),
                                                stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL)
        try:
            await wait_for(lambda: partial.exists() and partial.stat().st_size >= 2 << 20)
        finally:
            proc.kill()
            await proc.wait()
        assert proc.returncode == -9
        assert os.readlink(layout.current_link("echo")) == "1.0.0"
        verify_installed(layout, "echo")
        assert not layout.version_dir("echo", "1.1.0").exists()
        done = partial.stat().st_size
        result = await trio.run_process(cli(hub, layout, "install", "echo@1.1.0", "--json"),
                                        capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["resumed_bytes"] == done
    assert report["downloaded_bytes"] == len(BIG) - done  # main.py came with the killed run
    assert hub.blob_requests(DIGEST)[-1].headers["range"] == f"bytes={done}-"
    assert layout.current_version("echo") == "1.1.0"
    verify_installed(layout, "echo")
    assert not layout.staging_dirs("echo", "1.1.0") and not partial.exists()


async def _fast_then_trickle(stream, req, data):
    head = (f"HTTP/1.1 200 OK\r\nContent-Length: {len(data)}\r\nConnection: close\r\n"
            f'ETag: "{DIGEST}"\r\n\r\n').encode()
    await stream.send_all(head + data[:2 << 20])
    for i in range(2 << 20, len(data), 4096):
        await stream.send_all(data[i:i + 4096])
        await trio.sleep(0.05)


async def test_two_processes_installing_the_same_version_do_the_work_once(hub, layout):
    async def slowish(hub, stream, req, data, attempt):
        await send_blob(stream, req, data, f'"{DIGEST}"', trickle=(256 << 10, 0.05))

    hub.publish("echo", "1.0.0", {"main.py": b"print(1)\n", "models/m.bin": BIG})
    hub.faults[DIGEST] = slowish
    results = []

    async def run_one():
        results.append(await trio.run_process(cli(hub, layout, "install", "echo@1.0.0", "--json"),
                                              capture_stdout=True, capture_stderr=True,
                                              check=False))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_one)
            nursery.start_soon(run_one)
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    reports = [json.loads(r.stdout) for r in results]
    assert len(hub.blob_requests(DIGEST)) == 1
    assert sorted(r["already_installed"] for r in reports) == [False, True]
    assert sum(r["downloaded_bytes"] for r in reports) == len(BIG) + len(b"print(1)\n")
    verify_installed(layout, "echo")


async def test_kill_9_at_random_moments_never_breaks_current(hub, layout, options):
    import random

    async def steady(hub, stream, req, data, attempt):
        await send_blob(stream, req, data, f'"{DIGEST}"', trickle=(512 << 10, 0.02))

    hub.publish("echo", "1.0.0", {"main.py": b"print(1)\n"})
    hub.publish("echo", "1.1.0", {"main.py": b"print(2)\n", "models/m.bin": BIG,
                                  **{f"lib/m{i}.py": f"x = {i}\n".encode() for i in range(30)}})
    hub.faults[DIGEST] = steady
    rng = random.Random(4)
    with trio.fail_after(120):
        await install(layout, hub.url, "echo", "1.0.0", options=options)
        for _ in range(4):
            proc = await trio.lowlevel.open_process(cli(hub, layout, "install", "echo@1.1.0"),
                                                    stdout=subprocess.DEVNULL,
                                                    stderr=subprocess.DEVNULL)
            try:
                with trio.move_on_after(rng.uniform(0.3, 1.5)):
                    await proc.wait()
            finally:
                proc.kill()
                await proc.wait()
            assert layout.current_version("echo") in ("1.0.0", "1.1.0")
            verify_installed(layout, "echo")
        result = await trio.run_process(cli(hub, layout, "install", "echo@1.1.0"),
                                        capture_stderr=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert layout.current_version("echo") == "1.1.0"
    verify_installed(layout, "echo")
    verify_installed(layout, "echo", "1.0.0")
