"""`flowctl users ...` and `flowctl audit ls` as a user runs them (subprocesses against a real plane)."""

import json
import os
import sys
from functools import partial

import pytest
import trio

from runtime.plane import PlaneSettings, serve_control_plane

ADMIN = "users-cli-admin-key"
PASSWORD = "a long enough password"


async def flowctl(*args, server, token=ADMIN, stdin=b""):
    env = {**os.environ, "FLOWCTL_SERVER": server, "FLOWCTL_TOKEN": token, "FLOWCTL_CONFIG": "/nonexistent/flowctl.toml"}
    result = await trio.run_process([sys.executable, "-m", "flowctl", *args], capture_stdout=True,
                                    capture_stderr=True, check=False, env=env, stdin=stdin)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


@pytest.fixture
async def plane(nursery, tmp_path):
    settings = PlaneSettings(data_dir=tmp_path / "plane", port=0, roles=("hub", "scheduler", "gateway"))
    handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))
    return handle.url


async def test_users_tokens_and_audit_from_the_cli(plane):
    with trio.fail_after(120):
        code, out, err = await flowctl("users", "create", "ana", "--role", "operator", "--password-stdin",
                                       server=plane, stdin=PASSWORD.encode() + b"\n")
        assert code == 0, err
        assert "user ana created (operator)" in out and PASSWORD not in out + err
        code, out, err = await flowctl("users", "create", "tim", "--role", "tenant-viewer", "--tenant", "acme",
                                       "--password-stdin", server=plane, stdin=PASSWORD.encode() + b"\n")
        assert code == 0, err
        code, out, err = await flowctl("users", "create", "bad", "--role", "king", "--password-stdin",
                                       server=plane, stdin=PASSWORD.encode() + b"\n")
        assert code != 0 and "role 'king'" in err and len(err.strip().splitlines()) == 1
        code, out, err = await flowctl("users", "create", "eve", "--role", "viewer", server=plane)
        assert code != 0 and "--password-stdin" in err  # no terminal: never a password in argv
        code, out, _ = await flowctl("users", "ls", "--json", server=plane)
        assert code == 0 and [(u["name"], u["role"], u["tenant"]) for u in json.loads(out)] == [
            ("ana", "operator", None), ("tim", "tenant-viewer", "acme")]

        code, out, err = await flowctl("users", "token", "create", "ana", "--name", "laptop", server=plane)
        assert code == 0 and "shown only this once" in err
        token = out.strip()
        assert token.startswith("fcp_")
        # The token is the CLI's credential, with ana's role: an operator may not list users.
        code, out, err = await flowctl("node", "token", "create", "desk", server=plane, token=token)
        assert code == 0, err
        code, out, err = await flowctl("users", "ls", server=plane, token=token)
        assert code != 0 and "role operator may not users.read" in err
        code, out, _ = await flowctl("users", "token", "ls", "ana", "--json", server=plane, token=token)
        token_id = json.loads(out)[0]["token_id"]
        assert code == 0 and token not in out

        code, out, err = await flowctl("users", "passwd", "ana", "--password-stdin", server=plane,
                                       stdin=b"another long password\n")
        assert code == 0, err
        code, out, err = await flowctl("audit", "ls", "--json", "--since", "1h", "--user", "ana", server=plane)
        assert code == 0, err
        rows = json.loads(out)
        assert [(r["method"], r["target"], r["status"]) for r in rows] == [
            ("POST", "/api/cluster/tokens", 201)]
        code, out, err = await flowctl("audit", "ls", server=plane)
        assert code == 0 and "PRINCIPAL" in out and "/api/v1/users/ana/password" in out
        assert PASSWORD not in out and "another long password" not in out and token not in out

        code, out, err = await flowctl("users", "token", "revoke", "ana", token_id, server=plane)
        assert code == 0, err
        code, out, err = await flowctl("status", server=plane, token=token)
        assert code != 0 and "personal access token is not valid" in err
        code, out, err = await flowctl("users", "rm", "ana", server=plane)
        assert code == 0 and "removed" in out
        code, out, err = await flowctl("users", "rm", "ana", server=plane)
        assert code != 0 and "no user 'ana'" in err
