"""`flowctl jobs artifacts` against a real plane and node: the listing, and -o DIR downloading
each file checked against its SHA-256 (a hostile listing cannot write outside DIR)."""

import hashlib
import json
import subprocess
import sys

import httpx
import pytest
import trio

from runtime.clients.errors import PlaneError
from runtime.clients.jobs import JobsClient
from tests.flowctl.test_jobs_cli import ADMIN, flowctl, plane  # noqa: F401 - the plane fixture

AUTH = {"Authorization": f"Bearer {ADMIN}"}
JOB = {"name": "outs", "trigger": {"type": "manual"}, "steps": [{
    "name": "main", "service": "echo@stable",
    "command": ["sh", "-c", "mkdir -p $FLOWCTL_OUTPUT_DIR/d && printf one > $FLOWCTL_OUTPUT_DIR/one.txt && "
                            "head -c 3000000 /dev/urandom > $FLOWCTL_OUTPUT_DIR/d/big.bin"]}]}


async def _finished_run(url):
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as client:
        assert (await client.put("/api/v1/jobs/outs", json=JOB)).status_code in (200, 201)
        run_id = (await client.post("/api/v1/jobs/outs/trigger", json={})).json()["run_id"]
        with trio.fail_after(60):
            while (run := (await client.get(f"/api/v1/runs/{run_id}")).json())["state"] in ("pending", "running"):  # noqa: ASYNC110 - the plane's
                await trio.sleep(0.05)
        assert run["state"] == "succeeded", run
    return run_id


async def test_artifacts_are_listed_and_downloaded_checked(plane, tmp_path):  # noqa: F811
    run_id = await _finished_run(plane)
    code, out, err = await flowctl("jobs", "artifacts", run_id, "--json", server=plane)
    assert code == 0, err
    listed = {a["path"]: a for a in json.loads(out)}
    assert sorted(listed) == ["d/big.bin", "one.txt"] and listed["d/big.bin"]["size"] == 3_000_000
    code, out, err = await flowctl("jobs", "artifacts", run_id, server=plane)
    assert code == 0 and "one.txt" in out and "d/big.bin" in out, out + err
    dest = tmp_path / "out"
    code, out, err = await flowctl("jobs", "artifacts", run_id, "-o", str(dest), server=plane)
    assert code == 0 and "2 artifact(s)" in out, out + err
    assert (dest / "main" / "one.txt").read_bytes() == b"one"
    big = (dest / "main" / "d" / "big.bin").read_bytes()
    assert hashlib.sha256(big).hexdigest() == listed["d/big.bin"]["sha256"]
    assert sorted(p.name for p in (dest / "main").rglob("*")) == ["big.bin", "d", "one.txt"]  # no temp left
    code, out, err = await flowctl("jobs", "artifacts", "run_nope", server=plane)
    assert code == 1 and "no run 'run_nope'" in err and "Traceback" not in err


@pytest.mark.parametrize("path", ["../escape.txt", "/etc/x", "a/../../x"])
def test_a_hostile_listing_cannot_write_outside_the_directory(tmp_path, path):
    client = JobsClient("http://127.0.0.1:9", token="x")
    with pytest.raises(PlaneError, match="unsafe artifact name"):
        client.download_artifact({"run_id": "r", "step": "main", "path": path, "attempt": 1,
                                  "sha256": "0" * 64, "size": 1}, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_artifacts_command_imports_no_server_stack():
    from tests.flowctl.test_app import _closed_port

    args = ["jobs", "artifacts", "run_x", "--server", f"http://127.0.0.1:{_closed_port()}"]
    code = (f"import sys, runpy; sys.argv=['flowctl', *{args!r}]\n"
            "try:\n    runpy.run_module('flowctl', run_name='__main__')\n"
            "except SystemExit as exc: print('EXIT', exc.code)\n"
            "print('HEAVY', [m for m in ('quart', 'hypercorn', 'httpx', 'trio', 'runtime.jobs') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "EXIT 1" in result.stdout and "unreachable" in result.stderr, result.stdout + result.stderr
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr
