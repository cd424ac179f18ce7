"""A real `flowctl up` runs jobs; killed with SIGKILL mid-step and restarted on the same data dir,
the step's orphaned processes are stopped and the attempt is retried once, never run twice."""

import signal

import trio

from packer import pack_dir
from tests.flowctl import test_up
from tests.flowctl.test_up import ECHO, cli
from tests.polling import wait_until

cluster = test_up.cluster  # real `flowctl up` processes on one port, stopped after the test

JOB = """
name = "once"
[trigger]
type = "manual"
[policies]
retries = {{ max_attempts = 2, backoff = "1s" }}
[[steps]]
name = "main"
service = "echo@stable"
command = ["sh", "-c", 'if [ "$FLOWCTL_ATTEMPT" = 1 ]; then sleep 120 & echo $! > {marker}; wait; else echo second; fi']
"""


def running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_up_killed_mid_step_restarts_without_a_second_copy(cluster, tmp_path):
    port, start = cluster
    data = tmp_path / "data"
    marker = tmp_path / "first.pid"
    (tmp_path / "once.toml").write_text(JOB.format(marker=marker))
    first = await start("first", "--data-dir", str(data))
    with trio.fail_after(90):
        while True:
            if (await cli("jobs", "ls", port=port))[0] == 0:
                break
            await trio.sleep(0.2)
        bundle = pack_dir(ECHO, tmp_path / "dist")  # the step runs in its environment, on up's own node
        code, out, err = await cli("publish", str(bundle.path), "--hub", f"http://127.0.0.1:{port}", port=port)
        assert code == 0, err
        code, out, err = await cli("jobs", "apply", "-f", str(tmp_path / "once.toml"), port=port)
        assert code == 0, err
        code, out, err = await cli("jobs", "trigger", "once", port=port)
        run_id = out.split()[1]
        await wait_until(lambda: marker.exists() and marker.read_text().strip()
                         and any(data.glob("**/jobs/*/main.1/pgid")))
        orphan = int(marker.read_text())
        first.proc.send_signal(signal.SIGKILL)
        await first.proc.wait()
        assert running(orphan)  # the plane died; its step did not

        await start("second", "--data-dir", str(data))
        while True:
            code, out, err = await cli("jobs", "runs", "--json", port=port)
            if code == 0 and '"succeeded"' in out:
                break
            await trio.sleep(0.2)
    code, out, err = await cli("jobs", "logs", run_id, port=port)
    assert "== main attempt 1 (lost) ==" in out and "== main attempt 2 (succeeded) ==\nsecond" in out, out
    assert not running(orphan)
