"""What a node has to offer: CPUs, memory, GPUs (read once at start, memory on every heartbeat)."""

from __future__ import annotations

import os
import shutil

import trio

from runtime.control.messages import Gpu

NVIDIA_SMI_TIMEOUT = 5.0


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
    """The NVIDIA GPUs nvidia-smi reports, or () when there is none (or no driver)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        with trio.fail_after(NVIDIA_SMI_TIMEOUT):
            result = await trio.run_process(
                [smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                capture_stdout=True, capture_stderr=True, check=False)
    except (OSError, trio.TooSlowError):
        return ()
    if result.returncode != 0:
        return ()
    gpus = []
    for line in result.stdout.decode(errors="replace").splitlines():
        name, _, vram = line.rpartition(",")
        if name.strip() and vram.strip().isdigit():
            gpus.append(Gpu(name=name.strip(), vram_mb=int(vram.strip())))
    return tuple(gpus)
