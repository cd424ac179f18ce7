"""Broadcast shards and artifacts with real `flowctl up` and `flowctl node join` processes: the
plane SIGKILLed while two shards run is restarted, re-attaches both (each ran once), and the
shards' artifacts, uploaded after the restart, are downloadable."""

import json
import signal

import trio

from tests.flowctl.test_jobs_nodes import ended, fleet  # noqa: F401 - the fleet fixture
from tests.flowctl.test_up import cli
from tests.polling import wait_until


def broadcast_job(command):
    return ('name = "bc"\n[trigger]\ntype = "manual"\n[policies]\nretries = { max_attempts = 1 }\n'
            f'[[steps]]\nname = "main"\nservice = "echo@stable"\ncommand = {json.dumps(command)}\n'
            'routing = "broadcast"\n')


async def test_a_plane_killed_while_shards_run_re_attaches_every_shard(fleet, tmp_path):  # noqa: F811
    go, count = tmp_path / "go", tmp_path / "count"
    command = ["sh", "-c", f"echo started $FLOWCTL_SHARD_INDEX >> {count}; while [ ! -e {go} ]; do sleep 0.1; done; "
                           "echo $FLOWCTL_SHARD_INDEX/$FLOWCTL_SHARD_TOTAL > $FLOWCTL_OUTPUT_DIR/s.txt"]
    with trio.fail_after(180):
        await fleet.start_plane("first")
        await fleet.join("w1")
        await fleet.join("w2")
        await fleet.ready_nodes(2)
        await fleet.setup(broadcast_job(command))
        code, out, err = await cli("jobs", "trigger", "bc", port=fleet.port)
        assert code == 0, err
        run_id = out.split()[1]
        await wait_until(lambda: count.exists() and len(count.read_text().splitlines()) == 2, interval=0.05)
        fleet.plane.proc.send_signal(signal.SIGKILL)
        await fleet.plane.proc.wait()
        await fleet.start_plane("second")
        await fleet.ready_nodes(2)
        go.write_text("")
        run = await ended(fleet.port, run_id)
    assert run["state"] == "succeeded", run
    [attempt] = run["steps"][0]["attempts"]
    assert attempt["state"] == "succeeded" and attempt["reason"] == "all 2 shards succeeded", attempt
    assert sorted(count.read_text().splitlines()) == ["started 0", "started 1"]  # each shard ran once
    code, out, err = await cli("jobs", "artifacts", run_id, "-o", str(tmp_path / "out"), port=fleet.port)
    assert code == 0, err
    assert [(tmp_path / "out" / "main" / f"shard-{k}" / "s.txt").read_text() for k in (0, 1)] == ["0/2\n", "1/2\n"]
