"""What a node has to offer: CPUs, memory, GPUs (read once at start, memory on every heartbeat).

GPUs come from nvidia-smi (index, name, total memory), unless the node declares them in
FLOWCTL_NODE_GPUS: `NAME:VRAM_MB` entries separated by commas, indexed 0, 1, ... in that
order (e.g. `A100:40960,A100:40960`). That is for tests and for machines whose GPUs
nvidia-smi does not see; a declared GPU is only a promise to the scheduler. `none`
declares no GPU even where nvidia-smi finds some.
"""

from __future__ import annotations

import os
import shutil

import trio

from runtime.control.messages import Gpu
from runtime.node.agent.errors import JoinRefused

NVIDIA_SMI_TIMEOUT = 5.0
GPUS_ENV = "FLOWCTL_NODE_GPUS"
MAX_DECLARED_GPUS = 64


class BadGpuDeclaration(JoinRefused, ValueError):
    """FLOWCTL_NODE_GPUS is not a list of NAME:VRAM_MB entries (the node cannot join: retrying would not help)."""


def declared_gpus(text: str) -> tuple[Gpu, ...]:
    """Parse a FLOWCTL_NODE_GPUS value; BadGpuDeclaration names the bad entry."""
    if text.strip().lower() == "none":
        return ()
    gpus = []
    for index, entry in enumerate(e.strip() for e in text.split(",")):
        name, sep, vram = entry.rpartition(":")
        if not sep or not name.strip() or not vram.strip().isdigit() or int(vram) > 2**31:
            raise BadGpuDeclaration(f"{GPUS_ENV}: {entry!r} is not NAME:VRAM_MB (e.g. A100:40960)")
        gpus.append(Gpu(name=name.strip(), vram_mb=int(vram), index=index))
    if len(gpus) > MAX_DECLARED_GPUS:
        raise BadGpuDeclaration(f"{GPUS_ENV}: {len(gpus)} GPUs declared, at most {MAX_DECLARED_GPUS}")
    return tuple(gpus)


def memory_mb() -> tuple[int, int]:
    """(total, available) memory in MiB, from /proc/meminfo (0, 0 where it is absent)."""
    values: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    values[key] = int(rest.split()[0]) // 1024
    except OSError:
        return 0, 0
    return values.get("MemTotal", 0), values.get("MemAvailable", 0)


def cpu_count() -> int:
    """CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


async def nvidia_gpus() -> tuple[Gpu, ...]:
    """The node's GPUs: those FLOWCTL_NODE_GPUS declares, else what nvidia-smi reports, else ().

    Error handling: BadGpuDeclaration for a malformed FLOWCTL_NODE_GPUS.
    """
    declared = os.environ.get(GPUS_ENV, "").strip()
    if declared:
        return declared_gpus(declared)
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        with trio.fail_after(NVIDIA_SMI_TIMEOUT):
            result = await trio.run_process(
                [smi, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
                capture_stdout=True, capture_stderr=True, check=False)
    except (OSError, trio.TooSlowError):
        return ()
    if result.returncode != 0:
        return ()
    gpus = []
    for line in result.stdout.decode(errors="replace").splitlines():
        index, _, rest = line.partition(",")
        name, _, vram = rest.rpartition(",")
        if index.strip().isdigit() and name.strip() and vram.strip().isdigit():
            gpus.append(Gpu(name=name.strip(), vram_mb=int(vram.strip()), index=int(index)))
    return tuple(gpus)
