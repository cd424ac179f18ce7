"""Keep llama.cpp off its AMX kernels where the machine advertises AMX but cannot run them.

A llama-cpp-python built from source with the default native flags compiles llama.cpp's
AMX weight repacking on a CPU with AMX (Sapphire Rapids and later). Under hypervisors and
sandboxes that advertise AMX without granting its tile state, the first matrix product
crashes the process (SIGSEGV in ggml_backend_amx_mul_mat). The repacked weights live in
llama.cpp's "extra buffer types"; loading without them avoids the crash and, measured on
such a machine with Gemma 3 270M, costs no speed (49-51 tok/s either way).

`apply()` makes every model loaded afterwards in this process skip the extra buffer types
on CPUs that list AMX; LLAMA_EXTRA_BUFTS=1 keeps them (a machine where AMX works).
"""

from __future__ import annotations

import os
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpu_has_amx(cpuinfo: Path = CPUINFO) -> bool:
    """True if the CPU flags list AMX (Linux; elsewhere False)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return "amx_tile" in flags.split()


def extra_buffer_types_wanted() -> bool:
    """Whether models should load with llama.cpp's extra (repacked) buffer types."""
    setting = os.environ.get("LLAMA_EXTRA_BUFTS", "auto").strip().lower()
    if setting in ("1", "true", "yes", "on"):
        return True
    if setting in ("0", "false", "no", "off"):
        return False
    return not cpu_has_amx()


def apply() -> bool:
    """Patch llama-cpp-python's default model params for this process; True if it did."""
    if extra_buffer_types_wanted():
        return False
    import llama_cpp.llama_cpp as lib

    defaults = lib.llama_model_default_params
    if getattr(defaults, "_flowctl_no_extra_bufts", False):
        return True
    if "use_extra_bufts" not in {name for name, _ in lib.llama_model_params._fields_}:
        return False  # an older llama.cpp without extra buffer types

    def without_extra_bufts():
        params = defaults()
        params.use_extra_bufts = False
        return params

    without_extra_bufts._flowctl_no_extra_bufts = True
    lib.llama_model_default_params = without_extra_bufts
    return True
