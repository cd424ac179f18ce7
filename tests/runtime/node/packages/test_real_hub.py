"""End to end against the real hub on 127.0.0.1: pack, publish, install, upgrade incrementally."""

import json
import os

import trio

from packer.pack import pack_dir
from packer.signing import generate_keypair, load_public_key
from runtime.clients.hub import HubClient
from runtime.node import InstallOptions, install, verify_installed
from tests.runtime.hub.conftest import ADMIN_KEY, running_hub

MODEL = os.urandom(4 << 20)


def write_source(root, version, code):
    root.mkdir(parents=True, exist_ok=True)
    (root / "service.json").write_text(json.dumps({
        "service_id": "echo", "version": version, "startup_command": "python main.py",
        "models": [{"model_id": "m", "model_type": "chat", "path": "models/m.bin"}]}))
    (root / "main.py").write_bytes(code)
    (root / "models").mkdir(exist_ok=True)
    (root / "models/m.bin").write_bytes(MODEL)
    return root


async def test_publish_then_install_then_incremental_upgrade(tmp_path, layout, options):
    key, pub = generate_keypair(tmp_path / "release")
    trusted = InstallOptions(policy=options.policy, venv=False,
                             trusted_keys=(load_public_key(pub),))
    with trio.fail_after(120):
        async with running_hub(tmp_path / "hub") as (url, _state), \
                HubClient(url, token=ADMIN_KEY) as client:
            for version, code in (("1.0.0", b"print('one')\n"), ("1.0.1", b"print('two!')\n")):
                src = write_source(tmp_path / f"src-{version}", version, code)
                packed = await trio.to_thread.run_sync(
                    lambda src=src: pack_dir(src, tmp_path / "dist", signing_key=key))
                await client.publish(packed.path)
            first = await install(layout, url, "echo", "1.0.0", options=trusted)
            second = await install(layout, url, "echo", "latest", options=trusted)
    assert first.downloaded_bytes == len(MODEL) + len(b"print('one')\n")
    assert first.signed_by is not None
    assert second.version == "1.0.1" and second.previous == "1.0.0"
    assert second.downloaded_bytes == len(b"print('two!')\n")
    assert second.reused_bytes == len(MODEL)
    assert (layout.version_dir("echo", "1.0.1") / "main.py").read_bytes() == b"print('two!')\n"
    assert verify_installed(layout, "echo", trusted_keys=trusted.trusted_keys).version == "1.0.1"
