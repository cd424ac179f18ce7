"""`flowctl jobs ...` as a user runs it (subprocesses) against a real plane with the jobs role."""

import json
import os
import subprocess
import sys
from functools import partial

import httpx
import pytest
import trio

from runtime.plane import PlaneSettings, serve_control_plane
from tests.runtime.jobs.nodes import publish_echo, start_node

ADMIN = "jobs-cli-admin-key"
HELLO = """
name = "hello"
description = "says hello"
[trigger]
type = "manual"
[parameters.who]
type = "string"
default = "nobody"
[parameters.times]
type = "int"
default = 1
[[steps]]
name = "main"
service = "echo@stable"
command = ["sh", "-c", "for i in $(seq $FLOWCTL_PARAM_TIMES); do echo hello $FLOWCTL_PARAM_WHO; done"]
"""
FAILS = """
name = "fails"
[trigger]
type = "manual"
[[steps]]
name = "main"
service = "echo@stable"
command = ["sh", "-c", "echo disk full; exit 3"]
"""


async def flowctl(*args, server):
    env = {**os.environ, "FLOWCTL_SERVER": server, "FLOWCTL_TOKEN": ADMIN,
           "FLOWCTL_CONFIG": "/nonexistent/flowctl.toml"}
    with trio.fail_after(60):
        result = await trio.run_process([sys.executable, "-m", "flowctl", *args], capture_stdout=True,
                                        capture_stderr=True, check=False, env=env, stdin=subprocess.DEVNULL)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


@pytest.fixture
async def plane(nursery, tmp_path):
    settings = PlaneSettings(data_dir=tmp_path / "plane", port=0)  # the default roles include jobs
    with trio.fail_after(30):
        handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))
    auth = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
        await publish_echo(client, auth, tmp_path)  # steps run in its environment, on a node
        await start_node(nursery, client, auth, handle.url, tmp_path / "node", "n1")
    return handle.url


async def test_apply_trigger_wait_logs_runs_and_listings(plane, tmp_path):
    defs = tmp_path / "jobs"
    defs.mkdir()
    (defs / "hello.toml").write_text(HELLO)
    (defs / "fails.toml").write_text(FAILS)
    code, out, err = await flowctl("jobs", "apply", "-f", str(defs), "--dry-run", server=plane)
    assert code == 0, err
    assert out.splitlines() == ["default/fails  would create", "default/hello  would create"]
    code, out, err = await flowctl("jobs", "ls", "--json", server=plane)
    assert json.loads(out) == []
    code, out, err = await flowctl("jobs", "apply", "-f", str(defs), server=plane)
    assert code == 0 and "default/hello  created" in out, err

    code, out, err = await flowctl("jobs", "trigger", "hello", "--param", "who=ada", "-p", "times=2", "--wait",
                                   server=plane)
    assert code == 0, err
    run_id = out.split()[1]
    assert out.strip() == f"run {run_id} succeeded" and "main: succeeded (attempt 1)" in err
    code, out, err = await flowctl("jobs", "logs", run_id, "--step", "main", server=plane)
    assert code == 0 and "hello ada\nhello ada\n" in out, err
    code, out, err = await flowctl("jobs", "logs", run_id, "--follow", server=plane)
    assert code == 0 and out.splitlines() == ["== main attempt 1 ==", "hello ada", "hello ada"], out + err
    assert f"run {run_id} succeeded" in err

    code, out, err = await flowctl("jobs", "trigger", "fails", "--wait", server=plane)
    assert code == 1 and "failed: step 'main' failed: exit code 3: disk full" in err, out + err
    code, out, err = await flowctl("jobs", "runs", "--json", server=plane)
    assert [(r["job_name"], r["state"]) for r in json.loads(out)] == [("fails", "failed"), ("hello", "succeeded")]
    code, out, err = await flowctl("jobs", "runs", "--job", "hello", server=plane)
    assert out.splitlines()[0].split()[:4] == ["RUN_ID", "JOB", "STATE", "CAUSE"] and run_id in out
    code, out, err = await flowctl("jobs", "runs", "show", run_id, server=plane)
    assert code == 0 and f"run        {run_id}  default/hello  succeeded" in out, out + err
    assert "  step     main  succeeded" in out and "    attempt 1  succeeded  node " in out
    code, out, err = await flowctl("jobs", "runs", "show", run_id, "--json", server=plane)
    assert json.loads(out)["steps"][0]["artifacts"] == [] and json.loads(out)["steps"][0]["shards"] == []
    code, out, err = await flowctl("jobs", "runs", "show", server=plane)
    assert code != 0 and "usage: flowctl jobs runs show RUN_ID" in err
    code, out, err = await flowctl("jobs", "runs", "show", "run_nope", server=plane)
    assert code != 0 and "run_nope" in err and "Traceback" not in err
    code, out, err = await flowctl("jobs", "ls", server=plane)
    assert [line.split()[:3] for line in out.splitlines()[1:]] == [["default", "fails", "manual"],
                                                                  ["default", "hello", "manual"]]
    code, out, err = await flowctl("jobs", "show", "hello", server=plane)
    assert "job        default/hello (version 1)" in out and run_id in out

    code, out, err = await flowctl("jobs", "suspend", "hello", server=plane)
    assert out.strip() == "job default/hello suspended"
    code, out, err = await flowctl("jobs", "resume", "hello", server=plane)
    assert out.strip() == "job default/hello resumed"
    code, out, err = await flowctl("jobs", "rm", "hello", server=plane)
    assert code == 0
    code, out, err = await flowctl("jobs", "show", "hello", server=plane)
    assert code == 1 and "no job 'hello' in tenant 'default' (HTTP 404)" in err


async def test_a_long_run_is_cancelled_from_the_cli(plane, tmp_path):
    job = tmp_path / "sleepy.yaml"
    job.write_text("name: sleepy\ntrigger: {type: manual}\nsteps:\n"
                   "  - {name: main, service: echo@stable, command: [sleep, '60']}\n")
    assert (await flowctl("jobs", "apply", "-f", str(job), server=plane))[0] == 0
    code, out, err = await flowctl("jobs", "trigger", "sleepy", "--json", server=plane)
    run_id = json.loads(out)["run_id"]
    code, out, err = await flowctl("jobs", "cancel", run_id, server=plane)
    assert code == 0 and out.strip() == f"run {run_id} cancelled", err
    code, out, err = await flowctl("jobs", "cancel", run_id, server=plane)
    assert code == 1 and "cannot go from 'cancelled' to 'cancelled'" in err


@pytest.mark.parametrize(("args", "message"), [
    (["jobs", "apply", "-f", "/nonexistent/x.toml"], "/nonexistent/x.toml: no such file or directory"),
    (["jobs", "trigger", "nope"], "no job 'nope' in tenant 'default' (HTTP 404)"),
    (["jobs", "logs", "run_nope"], "no run 'run_nope' (HTTP 404)"),
])
async def test_errors_are_one_line_and_exit_1(plane, args, message):
    code, out, err = await flowctl(*args, server=plane)
    assert code == 1 and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1


async def test_bad_definitions_and_parameters_name_the_field(plane, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(HELLO.replace('type = "manual"', 'type = "cron"\ncron = "30 2 * * *"\ntimezone = "Mars/Olympus"'))
    code, out, err = await flowctl("jobs", "apply", "-f", str(bad), server=plane)
    assert code == 1 and f"{bad}: trigger.timezone: unknown timezone 'Mars/Olympus'" in err, err
    ok = tmp_path / "hello.toml"
    ok.write_text(HELLO)
    await flowctl("jobs", "apply", "-f", str(ok), server=plane)
    code, out, err = await flowctl("jobs", "trigger", "hello", "--param", "times=ten", server=plane)
    assert code == 1 and "--param times: expected int, got 'ten'" in err, err
    code, out, err = await flowctl("jobs", "trigger", "hello", "--param", "nobody", server=plane)
    assert code == 1 and "expected NAME=VALUE" in err


@pytest.mark.parametrize("args", [["jobs", "ls"], ["jobs", "runs"], ["jobs", "logs", "run_x", "--follow"]])
def test_jobs_commands_import_no_server_stack(args):
    from tests.flowctl.test_app import _closed_port

    code = (
        f"import sys, runpy; sys.argv=['flowctl', *{[*args, '--server', f'http://127.0.0.1:{_closed_port()}']!r}]\n"
        "try:\n    runpy.run_module('flowctl', run_name='__main__')\n"
        "except SystemExit as exc: print('EXIT', exc.code)\n"
        "print('HEAVY', [m for m in ('quart', 'hypercorn', 'httpx', 'trio', 'runtime.jobs') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "EXIT 1" in result.stdout and "unreachable" in result.stderr, result.stdout + result.stderr
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr
