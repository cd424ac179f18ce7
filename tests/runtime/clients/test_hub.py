"""The hub client against a real hub: publish, flags, errors, resumable pulls."""

import hashlib
import os

import pytest
import trio

from runtime.clients import HubClient, HubRequestFailed, HubUnreachable, PullFailed
from tests.hub_store.bundles import make_bundle
from tests.runtime.hub.conftest import ADMIN_KEY, running_hub


@pytest.fixture
async def hub_url(tmp_path):
    async with running_hub(tmp_path / "hub") as (url, _state):
        yield url


async def test_publish_list_flags_and_idempotence(hub_url, tmp_path):
    with trio.fail_after(30):
        packed = make_bundle(tmp_path)
        async with HubClient(hub_url, token=ADMIN_KEY) as client:
            first = await client.publish(packed.path)
            assert first["created"] is True and first["bundle_sha256"] == packed.sha256
            again = await client.publish(packed.path)
            assert again["created"] is False
            assert [s["service_id"] for s in await client.services()] == ["echo"]
            assert (await client.set_flag("echo", "1.0.0", "yank"))["yanked"] is True
            assert (await client.gc(dry_run=True))["dry_run"] is True
            assert (await client.fsck())["ok"] is True
        async with HubClient(hub_url) as anonymous:
            with pytest.raises(HubRequestFailed) as info:
                await anonymous.set_flag("echo", "1.0.0", "unyank")
            assert info.value.status == 401


async def test_unreachable_hub_is_one_clear_error():
    with trio.fail_after(30):
        async with HubClient("http://127.0.0.1:9") as client:
            with pytest.raises(HubUnreachable):
                await client.services()


async def test_pull_interrupted_then_resumed(hub_url, tmp_path):
    with trio.fail_after(60):
        packed = make_bundle(tmp_path, files={"big.bin": os.urandom(6 * 1024 * 1024)})
        out = tmp_path / "out"
        async with HubClient(hub_url, token=ADMIN_KEY) as client:
            await client.publish(packed.path)
            got = 0

            def stop_midway(n):
                nonlocal got
                got += n
                if got >= 2 * 1024 * 1024:
                    scope.cancel()

            with trio.CancelScope() as scope:
                await client.pull("echo", "latest", out, progress=stop_midway)
            part = out / "echo-1.0.0.fbundle.part"
            had = part.stat().st_size
            assert 0 < had < packed.size
            result = await client.pull("echo", "latest", out)
            assert result.resumed_from == had
            assert hashlib.sha256(result.path.read_bytes()).hexdigest() == packed.sha256
            assert not part.exists()
            again = await client.pull("echo", "1.0.0", out)
            assert again.already_complete


async def test_pull_with_a_corrupt_partial_fails_then_recovers(hub_url, tmp_path):
    with trio.fail_after(60):
        packed = make_bundle(tmp_path)
        out = tmp_path / "out"
        out.mkdir()
        (out / "echo-1.0.0.fbundle.part").write_bytes(b"garbage" * 10)
        async with HubClient(hub_url, token=ADMIN_KEY) as client:
            await client.publish(packed.path)
            with pytest.raises(PullFailed):
                await client.pull("echo", "latest", out)
            result = await client.pull("echo", "latest", out)
            assert result.resumed_from == 0 and result.sha256 == packed.sha256
