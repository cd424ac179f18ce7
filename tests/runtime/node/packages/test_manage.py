"""ls / use / uninstall / verify / gc, signatures, and the CLI's output and exit codes."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import trio

from packer.signing import generate_keypair, load_private_key, load_public_key, sign_manifest
from runtime.node import (
    InvalidReference,
    NotInstalled,
    TrustRefused,
    VerifyFailed,
    VersionInUse,
    gc,
    install,
    list_installed,
    uninstall,
    use,
    verify_installed,
)

FILES = {"main.py": b"print(1)\n", "lib/util.py": b"X = 1\n", "models/m.bin": os.urandom(100_000)}


async def two_versions(hub, layout, options):
    hub.publish("echo", "1.0.0", FILES)
    hub.publish("echo", "1.1.0", {**FILES, "main.py": b"print(2)\n"})
    await install(layout, hub.url, "echo", "1.0.0", options=options)
    await install(layout, hub.url, "echo", "1.1.0", options=options)


async def test_ls_use_uninstall(hub, layout, options):
    with trio.fail_after(20):
        await two_versions(hub, layout, options)
        assert [(v.version, v.current) for v in list_installed(layout)] == [
            ("1.0.0", False), ("1.1.0", True)]
        result = await use(layout, "echo", "1.0.0")
        assert result.previous == "1.1.0" and layout.current_version("echo") == "1.0.0"
        with pytest.raises(VersionInUse, match="--force"):
            await uninstall(layout, "echo", "1.0.0")
        with pytest.raises(VersionInUse):
            await uninstall(layout, "echo", "1.1.0", running={"1.1.0"})
        assert await uninstall(layout, "echo", "1.1.0") == ["1.1.0"]
        with pytest.raises(NotInstalled):
            await use(layout, "echo", "1.1.0")
        assert await uninstall(layout, "echo", force=True) == ["1.0.0"]
    assert not layout.service_dir("echo").exists() and list_installed(layout) == []


async def test_verify_names_a_changed_file_and_drops_the_shared_blob(hub, layout, options):
    with trio.fail_after(20):
        await two_versions(hub, layout, options)
    changed = layout.version_dir("echo", "1.1.0") / "lib/util.py"
    os.chmod(changed, 0o644)
    changed.write_bytes(b"X = 2\n")  # same size, other bytes
    os.chmod(changed, 0o444)
    with pytest.raises(VerifyFailed, match="'lib/util.py' changed"):
        verify_installed(layout, "echo", "1.1.0")
    # The file was a hard link into the store: the poisoned blob is gone, not reused later.
    assert list(layout.root.glob("blobs/sha256/*/*")) and not any(
        p.read_bytes() == b"X = 2\n" for p in layout.root.glob("blobs/sha256/*/*"))
    extra = layout.version_dir("echo", "1.0.0") / "models"
    os.chmod(extra, 0o755)
    (extra / "stray.bin").write_bytes(b"?")
    with pytest.raises(VerifyFailed, match="'models/stray.bin' is not in the manifest"):
        verify_installed(layout, "echo", "1.0.0")


async def test_gc_drops_only_unused_blobs(hub, layout, options):
    with trio.fail_after(20):
        await two_versions(hub, layout, options)
        await uninstall(layout, "echo", "1.0.0")
    layout.partial_path("ab" * 32).write_bytes(b"leftover")
    crashed = layout.new_staging_dir("echo", "1.2.0-rc.1")
    (crashed / "lib").mkdir(parents=True)
    report = gc(layout, grace=0)
    assert report.blobs == 1 and report.partials == 1  # print(1)'s blob, and the partial
    assert not crashed.exists()
    verify_installed(layout, "echo", "1.1.0")


async def test_a_leftover_temp_symlink_is_swept_on_the_next_switch(hub, layout, options):
    with trio.fail_after(20):
        await two_versions(hub, layout, options)
        leftover = layout.service_dir("echo") / ".current-tmp-123456"
        leftover.symlink_to("1.0.0")
        await use(layout, "echo", "1.0.0")
    assert not leftover.is_symlink()
    assert sorted(p.name for p in layout.service_dir("echo").iterdir()) == [
        "1.0.0", "1.1.0", "current"]


@pytest.fixture
def keys(tmp_path):
    good = generate_keypair(tmp_path / "good")
    bad = generate_keypair(tmp_path / "bad")
    return {"good": good, "bad": bad}


async def test_signatures_are_required_once_keys_are_trusted(hub, layout, options, keys):
    good_key, good_pub = keys["good"]
    bad_key, _ = keys["bad"]
    trusted = dataclasses.replace(options, trusted_keys=(load_public_key(good_pub),))
    raw = hub.publish("echo", "1.0.0", FILES)
    with trio.fail_after(20):
        with pytest.raises(TrustRefused, match="unsigned"):
            await install(layout, hub.url, "echo", "1.0.0", options=trusted)
        hub.signatures[("echo", "1.0.0")] = sign_manifest(raw, load_private_key(bad_key))
        with pytest.raises(TrustRefused, match="not among the trusted keys"):
            await install(layout, hub.url, "echo", "1.0.0", options=trusted)
        assert not [r for r in hub.log if r.path.startswith("/blobs/")]
        assert layout.current_version("echo") is None
        hub.signatures[("echo", "1.0.0")] = sign_manifest(raw, load_private_key(good_key))
        report = await install(layout, hub.url, "echo", "1.0.0", options=trusted)
    assert report.signed_by and report.activated
    assert verify_installed(layout, "echo", trusted_keys=trusted.trusted_keys).signed_by


def run_cli(layout, *args):
    return subprocess.run([sys.executable, "-m", "flowctl", "node", *args, "--data-dir",
                           str(layout.root)], capture_output=True, text=True, timeout=60)


async def test_cli_reports_and_one_line_errors(hub, layout, options):
    with trio.fail_after(60):
        await two_versions(hub, layout, options)
        ls = await trio.to_thread.run_sync(run_cli, layout, "ls", "--json")
        assert ls.returncode == 0 and [r["current"] for r in json.loads(ls.stdout)] == [False, True]
        refused = await trio.to_thread.run_sync(run_cli, layout, "uninstall", "echo@1.1.0")
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines() == [
            "error: echo@1.1.0 is the current version, presumed running (pass --force to remove it)"]
        used = await trio.to_thread.run_sync(run_cli, layout, "use", "echo@1.0.0")
        assert used.returncode == 0 and "current -> 1.0.0 (was 1.1.0)" in used.stdout
        ok = await trio.to_thread.run_sync(run_cli, layout, "verify", "echo", "--json")
        assert ok.returncode == 0 and json.loads(ok.stdout)["version"] == "1.0.0"
        bad = await trio.to_thread.run_sync(run_cli, layout, "use", "nope@1.0.0")
        assert bad.returncode == 1 and "'nope@1.0.0' is not installed" in bad.stderr
        no_hub = await trio.to_thread.run_sync(
            lambda: subprocess.run([sys.executable, "-m", "flowctl", "node", "install", "echo",
                                    "--data-dir", str(layout.root)], capture_output=True,
                                   text=True, timeout=60, env={**os.environ, "FLOWCTL_HUB_URL": "",
                                                               "FLOWCTL_CONFIG": "/nonexistent"}))
        assert no_hub.returncode == 1 and "no hub URL" in no_hub.stderr


async def test_hostile_references_never_reach_a_path(hub, layout, options):
    with trio.fail_after(10):
        with pytest.raises(InvalidReference, match="service id"):
            await install(layout, hub.url, "../etc", "1.0.0", options=options)
        with pytest.raises(InvalidReference, match="version"):
            await use(layout, "echo", "../../x")
        with pytest.raises(InvalidReference):
            await uninstall(layout, "echo/..", force=True)
    assert hub.log == []
