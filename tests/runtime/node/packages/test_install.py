"""Installing from a hub: incremental, verified, atomic, with the refusals."""

import dataclasses
import hashlib
import os
import stat

import pytest
import trio

from runtime.clients import HubRequestFailed
from runtime.node import (
    DowngradeRefused,
    NotEnoughSpace,
    install,
    verify_installed,
)

MODEL = os.urandom(3 << 20)


def v1_files(code=b"print('v1')\n"):
    return {"main.py": code, "run.sh": (b"#!/bin/sh\necho hi\n", 0o755),
            "models/m.bin": MODEL, "empty.txt": b""}


async def test_install_links_verifies_and_activates(hub, layout, options):
    with trio.fail_after(20):
        hub.publish("echo", "1.0.0", v1_files())
        report = await install(layout, hub.url, "echo", "1.0.0", options=options)
    assert report.activated and report.previous is None
    assert report.downloaded_bytes == report.total_bytes and report.reused_bytes == 0
    root = layout.version_dir("echo", "1.0.0")
    assert (root / "models/m.bin").read_bytes() == MODEL
    assert stat.S_IMODE((root / "main.py").stat().st_mode) == 0o444
    assert stat.S_IMODE((root / "run.sh").stat().st_mode) == 0o555
    assert (root / "models/m.bin").stat().st_nlink == 2  # hard link into the local store
    assert os.readlink(layout.current_link("echo")) == "1.0.0"
    assert {"service", "version", "downloaded_bytes", "reused_bytes", "seconds"} <= set(
        report.to_dict())
    verify_installed(layout, "echo")
    assert not list(layout.downloads.iterdir())


async def test_incremental_install_downloads_only_the_changed_file(hub, layout, options):
    with trio.fail_after(20):
        hub.publish("echo", "1.0.0", v1_files())
        hub.publish("echo", "1.0.1", v1_files(b"print('v2')\n"))
        await install(layout, hub.url, "echo", "1.0.0", options=options)
        hub.log.clear()
        report = await install(layout, hub.url, "echo", "latest", options=options)
    assert report.version == "1.0.1" and report.previous == "1.0.0"
    assert report.downloaded_bytes == len(b"print('v2')\n")
    assert report.reused_bytes == report.total_bytes - report.downloaded_bytes
    changed = hashlib.sha256(b"print('v2')\n").hexdigest()
    assert [r.path for r in hub.log if r.path.startswith("/blobs/")] == [f"/blobs/sha256:{changed}"]
    assert os.readlink(layout.current_link("echo")) == "1.0.1"
    verify_installed(layout, "echo", "1.0.0")
    verify_installed(layout, "echo", "1.0.1")


async def test_reinstall_is_a_no_op(hub, layout, options):
    with trio.fail_after(20):
        hub.publish("echo", "1.0.0", v1_files())
        await install(layout, hub.url, "echo", "1.0.0", options=options)
        hub.log.clear()
        report = await install(layout, hub.url, "echo", "1.0.0", options=options)
    assert report.already_installed and report.downloaded_bytes == 0 and not report.activated
    assert not [r for r in hub.log if r.path.startswith("/blobs/")]


async def test_unknown_version_is_a_clear_error(hub, layout, options):
    with trio.fail_after(10), pytest.raises(HubRequestFailed, match="not on the hub"):
        await install(layout, hub.url, "echo", "9.9.9", options=options)


async def test_downgrade_refused_unless_allowed(hub, layout, options):
    with trio.fail_after(20):
        hub.publish("echo", "1.0.0", v1_files())
        hub.publish("echo", "1.1.0", v1_files(b"x = 2\n"))
        await install(layout, hub.url, "echo", "1.1.0", options=options)
        hub.log.clear()
        with pytest.raises(DowngradeRefused, match="'1.1.0' to '1.0.0'"):
            await install(layout, hub.url, "echo", "1.0.0", options=options)
        assert not [r for r in hub.log if r.path.startswith("/blobs/")]
        assert not layout.version_dir("echo", "1.0.0").exists()
        allowed = dataclasses.replace(options, allow_downgrade=True)
        report = await install(layout, hub.url, "echo", "1.0.0", options=allowed)
    assert report.activated and layout.current_version("echo") == "1.0.0"


async def test_disk_space_refusal_names_the_numbers(hub, layout, options):
    with trio.fail_after(10):
        hub.publish("echo", "1.0.0", v1_files())
        small = dataclasses.replace(options, free_space=lambda path: 1000, disk_margin=10)
        with pytest.raises(NotEnoughSpace) as info:
            await install(layout, hub.url, "echo", "1.0.0", options=small)
    total = sum(len(v if isinstance(v, bytes) else v[0]) for v in v1_files().values())
    message = str(info.value)
    assert f"need {2 * total + 10} bytes" in message and "1000 free" in message
    assert f"download {total}" in message and "margin 10" in message
    assert not [r for r in hub.log if r.path.startswith("/blobs/")]
    assert layout.current_version("echo") is None


async def test_keep_prunes_old_versions_but_not_the_previous(hub, layout, options):
    keep2 = dataclasses.replace(options, keep=2)
    with trio.fail_after(30):
        for i in range(4):
            hub.publish("echo", f"1.0.{i}", v1_files(f"x = {i}\n".encode()))
            report = await install(layout, hub.url, "echo", f"1.0.{i}", options=keep2)
    assert layout.installed_versions("echo") == ["1.0.2", "1.0.3"]
    assert report.removed_versions == ("1.0.1",)


async def test_leftovers_of_a_crash_at_each_step_are_swept_or_reused(hub, layout, options):
    hub.publish("echo", "1.0.0", v1_files())
    hub.publish("echo", "1.1.0", v1_files(b"x = 11\n"))
    with trio.fail_after(20):
        await install(layout, hub.url, "echo", "1.0.0", options=options)
        # Killed while staging: a half-built tree under a staging name.
        half = layout.new_staging_dir("echo", "1.1.0")
        (half / "models").mkdir(parents=True)
        (half / "models/m.bin").write_bytes(b"half")
        # Killed after the rename, before the switch: complete tree, current unchanged.
        staged = await install(layout, hub.url, "echo", "1.1.0",
                               options=dataclasses.replace(options, activate=False))
        assert not half.exists() and not staged.activated
        assert layout.current_version("echo") == "1.0.0"
        report = await install(layout, hub.url, "echo", "1.1.0", options=options)
    assert report.already_installed and report.activated and report.downloaded_bytes == 0
    assert layout.current_version("echo") == "1.1.0"
    verify_installed(layout, "echo")
