"""Find or build llama.cpp's `llama-server`, from the sources llama-cpp-python vendors (bench/llm.py).

Order: $LLAMA_SERVER (a path to the binary), `llama-server` on PATH, then a build cached
under ~/.cache/flowctl-bench/llama-server-<version>/ (built once: `pip download` of the
installed llama-cpp-python's sdist, whose vendor/llama.cpp is the very llama.cpp the worker
runs, then cmake --build --target llama-server -j2). `find_or_build` says which it used.

Run alone to build it ahead of the bench: .venv/bin/python bench/_llama_server.py
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

CACHE = Path(os.environ.get("FLOWCTL_BENCH_CACHE") or Path.home() / ".cache" / "flowctl-bench")
# Off: no curl/OpenSSL (the bench serves a local file), no UI download, only the one target.
CMAKE_FLAGS = ("-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
               "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_APP=OFF",
               "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DBUILD_SHARED_LIBS=OFF")


class NoServer(Exception):
    """llama-server is neither installed nor buildable here."""


def installed_version() -> str:
    """The installed llama-cpp-python's version."""
    return importlib.metadata.version("llama-cpp-python")


def cached_binary(version: str) -> Path:
    """Where the cached build of `version` puts llama-server."""
    return CACHE / f"llama-server-{version}" / "build" / "bin" / "llama-server"


def _run(argv: list[str], log: Path) -> None:
    with log.open("ab") as out:
        out.write(("$ " + " ".join(argv) + "\n").encode())
        out.flush()
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-1500:]
        raise NoServer(f"{argv[0]} failed ({done.returncode}); see {log}:\n{tail}")


def build(version: str, jobs: int = 2) -> Path:
    """Download the sdist of `version` and build llama-server from its vendored llama.cpp."""
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise NoServer(f"cannot build llama-server: {tool} is not installed")
    root = CACHE / f"llama-server-{version}"
    root.mkdir(parents=True, exist_ok=True)
    log = root / "build.log"
    sdist = root / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.is_file():
        _run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
              "-d", str(root), f"llama-cpp-python=={version}"], log)
    source = root / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if not source.is_dir():
        with tarfile.open(sdist) as tar:
            tar.extractall(root, filter="data")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    _run(["cmake", "-S", str(source), "-B", str(root / "build"), *generator, *CMAKE_FLAGS], log)
    _run(["cmake", "--build", str(root / "build"), "--target", "llama-server", "-j", str(jobs)], log)
    binary = cached_binary(version)
    if not binary.is_file():
        raise NoServer(f"the build finished but {binary} is missing; see {log}")
    return binary


def find_or_build(*, allow_build: bool = True) -> tuple[Path, str]:
    """The llama-server binary and a sentence saying where it came from."""
    if env := os.environ.get("LLAMA_SERVER"):
        return Path(env), f"$LLAMA_SERVER={env}"
    version = installed_version()
    cached = cached_binary(version)
    if cached.is_file():
        return cached, f"cached build of llama.cpp vendored in llama-cpp-python {version} ({cached})"
    if on_path := shutil.which("llama-server"):
        return Path(on_path), f"llama-server on PATH ({on_path}; its llama.cpp may differ)"
    if not allow_build:
        raise NoServer(f"no llama-server: set LLAMA_SERVER, or build it with "
                       f"`python bench/_llama_server.py` (into {cached.parent})")
    return build(version), (f"built now from llama.cpp vendored in llama-cpp-python {version} "
                            f"({cached})")


if __name__ == "__main__":
    try:
        path, how = find_or_build()
    except NoServer as exc:
        print(f"llama-server: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"llama-server: {how}")
