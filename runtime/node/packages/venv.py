"""Per-requirements virtualenvs: one per distinct requirements.txt, shared by versions.

A venv lives at `venvs/{key}`, key = sha256 of the requirements', the bundled wheels'
digests and the Python version; it is built in place under a lock and marked complete last, so
a crash leaves an unmarked dir that the next run rebuilds. Wheels shipped in
the bundle under `wheels/` are tried first with `--no-index` (an offline node
can install); only if that fails is the package index allowed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import trio

from packer.manifest import Manifest
from runtime.node.packages.errors import VenvFailed
from runtime.node.packages.fsutil import fsync_dir, remove_tree, write_file_durably
from runtime.node.packages.layout import NodeLayout
from runtime.node.packages.lock import hold_lock

REQUIREMENTS = "requirements.txt"
WHEELS = "wheels"
COMPLETE = ".flowctl-complete"
PIP_TIMEOUT = 900.0


def venv_key(manifest: Manifest) -> str | None:
    """The venv name for a manifest's requirements.txt and bundled wheels on this
    interpreter; None when the bundle has no requirements.txt."""
    digests = {f.path: f.sha256 for f in manifest.files
               if f.path == REQUIREMENTS or f.path.startswith(WHEELS + "/")}
    if REQUIREMENTS not in digests:
        return None
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    material = "\n".join(f"{p} {d}" for p, d in sorted(digests.items())) + f"\n{py}"
    return hashlib.sha256(material.encode()).hexdigest()[:20] + "-" + py


async def ensure_venv(layout: NodeLayout, tree: Path, key: str, *,
                      build_limit: float = PIP_TIMEOUT) -> Path:
    """The venv `key` for `tree/requirements.txt`, created unless it already exists."""
    target = layout.venvs / key
    async with hold_lock(layout.locks / f"venv-{key}.lock"):
        if (target / COMPLETE).is_file():
            return target
        await trio.to_thread.run_sync(remove_tree, target)
        try:
            with trio.fail_after(build_limit):
                await _build(key, target, tree)
        except trio.TooSlowError:
            raise VenvFailed(key, "pip install", f"took longer than {build_limit:g} s") from None
        await trio.to_thread.run_sync(_mark_complete, target)
    return target


def _mark_complete(target: Path) -> None:
    write_file_durably(target / COMPLETE, b"", 0o444)
    fsync_dir(target)


async def _run(key: str, step: str, argv: list[str]) -> None:
    result = await trio.run_process(argv, check=False, capture_stdout=True,
                                    stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise VenvFailed(key, step, result.stdout.decode(errors="replace"))


async def _build(key: str, target: Path, tree: Path) -> None:
    # Without pip inside, the venv is made in ~50 ms; our own pip installs into it.
    own_pip = importlib.util.find_spec("pip") is not None
    create = [sys.executable, "-m", "venv", str(target)]
    await _run(key, "python -m venv", [*create, "--without-pip"] if own_pip else create)
    py = str(target / "bin" / "python")
    pip = [sys.executable, "-m", "pip", "--python", py] if own_pip else [py, "-m", "pip"]
    base = [*pip, "install", "--disable-pip-version-check", "-q", "-r", str(tree / REQUIREMENTS)]
    wheels = tree / WHEELS
    if wheels.is_dir():
        try:
            await _run(key, "pip install (bundled wheels)",
                       [*base, "--no-index", "--find-links", str(wheels)])
            return
        except VenvFailed:
            base = [*base, "--find-links", str(wheels)]
    await _run(key, "pip install", base)
