"""requirements.txt: a venv per distinct requirements, built offline from bundled wheels."""

import base64
import dataclasses
import hashlib
import io
import subprocess
import zipfile

import trio

from runtime.node import gc, install, uninstall


def tiny_wheel() -> bytes:
    """A minimal pure-Python wheel, `tinydep 1.0`, built by hand."""
    files = {
        "tinydep.py": b"VALUE = 42\n",
        "tinydep-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinydep\nVersion: 1.0\n",
        "tinydep-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\n"
                                       b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
        f"{len(data)}\n" for name, data in files.items()) + "tinydep-1.0.dist-info/RECORD,,\n"
    files["tinydep-1.0.dist-info/RECORD"] = record.encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


async def test_requirements_venv_from_bundled_wheels_is_shared(hub, layout, options):
    files = {"main.py": b"import tinydep\n", "requirements.txt": b"tinydep==1.0\n",
             "wheels/tinydep-1.0-py3-none-any.whl": tiny_wheel()}
    hub.publish("echo", "1.0.0", files)
    hub.publish("echo", "1.0.1", {**files, "main.py": b"import tinydep  # v2\n"})
    with_venv = dataclasses.replace(options, venv=True)
    with trio.fail_after(180):
        first = await install(layout, hub.url, "echo", "1.0.0", options=with_venv)
        second = await install(layout, hub.url, "echo", "1.0.1", options=with_venv)
        out = await trio.run_process([f"{first.venv}/bin/python", "-c",
                                      "import tinydep; print(tinydep.VALUE)"],
                                     capture_stdout=True, stderr=subprocess.STDOUT)
    assert out.stdout.strip() == b"42"
    assert first.venv == second.venv  # identical requirements: one venv
    gc(layout)
    assert [p.name for p in layout.venvs.iterdir()] == [first.venv.rsplit("/", 1)[1]]
    await uninstall(layout, "echo", force=True)
    gc(layout)
    assert list(layout.venvs.iterdir()) == []
