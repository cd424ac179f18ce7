"""`flowctl up` as a child process, the echo bundle through the CLI, the official `openai` package, then Ctrl-C.

The plane, the CLI calls and the client are all real processes or sockets; `up` is started and
stopped with the demo's helpers (examples/demo_steps.py: its own session, SIGINT to its group).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import openai
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))

from demo_steps import Cli, Plane, child_env, descendants  # noqa: E402

LIMIT_S = 60  # the whole test; about 10 s on an idle 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.timeout(LIMIT_S)
def test_up_then_the_openai_package_then_ctrl_c(tmp_path):
    env = child_env(tmp_path)
    plane = Plane(free_port(), tmp_path / "plane", env)
    cli = Cli(env)
    started: list[int] = []
    left: list[int] = []
    try:
        plane.start(limit_s=30)
        cli.env.update(FLOWCTL_SERVER=plane.url, FLOWCTL_HUB_URL=plane.url, FLOWCTL_TOKEN=plane.admin_key)
        cli("pack", ROOT / "examples" / "echo", "-o", tmp_path)
        cli("publish", tmp_path / "echo-1.0.0.fbundle")
        cli("deploy", "echo", "--timeout", "30")
        cli("tenants", "create", "acme")
        created = cli("keys", "create", "--tenant", "acme", "--models", "echo", capture=True)
        key = created.strip()  # only the key is on stdout
        assert key.startswith("fgk_") and "\n" not in key
        started = descendants(plane.proc.pid)
        assert any("worker.py" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
                   for pid in started if alive(pid)), "the echo worker should be running under up"

        client = openai.OpenAI(base_url=plane.url + "/v1", api_key=key, max_retries=0, timeout=20)
        with client:
            assert [m.id for m in client.models.list()] == ["echo"]
            chat = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hello up"}])
            assert chat.choices[0].message.content == "hello up" and chat.usage.completion_tokens == 2
            pieces = [c.choices[0].delta.content for c in client.chat.completions.create(
                model="echo", stream=True, messages=[{"role": "user", "content": "one two three four"}])
                if c.choices and c.choices[0].delta.content]
            assert "".join(pieces) == "one two three four" and len(pieces) >= 4
            emb = client.embeddings.create(model="echo", input=["a", "b", "c"])
            assert [d.index for d in emb.data] == [0, 1, 2] and len(emb.data[0].embedding) == 64
            assert emb.data[0].embedding != emb.data[1].embedding
            with openai.OpenAI(base_url=plane.url + "/v1", api_key=key[:-1] + "x", max_retries=0) as wrong, \
                    pytest.raises(openai.AuthenticationError):
                wrong.models.list()
        assert "acme" in cli("usage", "--tenant", "acme", capture=True)
    finally:
        plane.stop(grace_s=20)  # SIGINT to its group, as Ctrl-C; SIGKILL to everything after 20 s
        left = [pid for pid in started if alive(pid)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    assert plane.proc.returncode == 0, f"flowctl up exited with {plane.proc.returncode}"
    assert "SIGINT: stopping" in "\n".join(plane._lines)
    assert not left, "processes outlived flowctl up"
