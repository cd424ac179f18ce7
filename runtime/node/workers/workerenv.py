"""What a worker inherits from the node's environment: an allow-list, never the node's secrets.

A worker runs bundle code, which is not the node's to trust with its own settings
(`FLOWCTL_ADMIN_KEY`, `FLOWCTL_TOKEN`, `FLOWCTL_JOIN_TOKEN`) or with whatever else the
operator's shell holds (cloud credentials, proxies with passwords). So a worker's
environment is built, not copied: the names below that the node has, the ones the
operator adds (`worker_env_passthrough`), then what the node sets for the worker
contract and what the bundle declares (see `WorkerSpec.child_env`).

An entry is a variable name, or a prefix ending in `*` (`LC_*`).

GPUs: a worker the control plane placed is given exactly its GPUs (`gpu_env`):
CUDA_VISIBLE_DEVICES names their indexes, or is "" (no GPU visible) for a worker
placed without one, so it cannot take a GPU another replica was given. Indexes are
nvidia-smi's, so CUDA_DEVICE_ORDER=PCI_BUS_ID makes CUDA number them the same way.
Both override the node's own values and the bundle's `env`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from runtime.node.workers.errors import BadPassthrough

WORKER_ENV_ALLOWLIST: tuple[str, ...] = (
    # The OS, the user and the locale: what any program expects to find.
    "PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "TZ", "LANG", "LANGUAGE", "LC_*",
    # Where the system's CA certificates are, for a worker that makes HTTPS calls (OpenSSL,
    # requests and huggingface_hub, curl).
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    # Compute runtimes: shared libraries, device selection, thread counts, BLAS settings
    # (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set on some machines for correctness), and
    # the llama.cpp knobs of the llama-chat example.
    "LD_LIBRARY_PATH", "CUDA_*", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
    "OMP_*", "MKL_NUM_THREADS", "OPENBLAS_*", "GGML_*", "LLAMA_*",
    # Not a secret: the test suite marks every process it starts with it, and finds leaked
    # workers by it in /proc/PID/environ (tests/conftest.py).
    "FLOWCTL_TEST_RUN",
)

_ENTRY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\*?")
# The node's own settings: an operator cannot pass them on, even on purpose.
RESERVED_PREFIX = "FLOWCTL_"


def check_passthrough(entries: Iterable[str]) -> tuple[str, ...]:
    """The operator's extra names, validated; BadPassthrough names the first bad one."""
    checked = []
    for entry in entries:
        if not isinstance(entry, str) or not _ENTRY.fullmatch(entry):
            raise BadPassthrough(entry, "is not a variable name or a PREFIX* (letters, digits, _)")
        name = entry.rstrip("*")
        if name.startswith(RESERVED_PREFIX) or (entry.endswith("*") and RESERVED_PREFIX.startswith(name)):
            raise BadPassthrough(entry, f"would pass on the node's own {RESERVED_PREFIX}* settings")
        checked.append(entry)
    return tuple(checked)


def gpu_env(gpus: Iterable[int]) -> dict[str, str]:
    """The variables that give a worker exactly the GPUs with these indexes (none: "")."""
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in gpus), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def inherited_env(environ: Mapping[str, str], extra: Iterable[str] = ()) -> dict[str, str]:
    """The part of `environ` a worker may see: WORKER_ENV_ALLOWLIST plus `extra` entries."""
    entries = (*WORKER_ENV_ALLOWLIST, *extra)
    names = {e for e in entries if not e.endswith("*")}
    prefixes = tuple(e[:-1] for e in entries if e.endswith("*"))
    return {k: v for k, v in environ.items() if k in names or k.startswith(prefixes)}
