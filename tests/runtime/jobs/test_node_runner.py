"""The node's job runner with real processes: a script in the installed tree with a parameter,
its log streamed, the leader's fencing token (attempt by attempt in a `job_attempts` batch), cancel
and timeout of the process group."""

import json
import time

import msgspec
import pytest
import trio

from runtime.control.job_batches import MAX_ENTRIES
from runtime.control.messages import (
    JobAttempt,
    JobAttempts,
    JobCancel,
    JobLog,
    JobReport,
    decode_node_message,
    decode_plane_message,
    encode,
)
from runtime.node.agent import jobs
from runtime.node.agent.jobs import NodeJobRunner
from tests.polling import wait_until


class Plane:
    """What the runner sends, decoded again as the plane would."""

    def __init__(self):
        self.reports, self.logs = [], []

    async def send(self, message):
        message = decode_node_message(encode(message))
        (self.reports if isinstance(message, JobReport) else self.logs).append(message)
        await trio.lowlevel.checkpoint()

    def final(self, attempt=1):
        ends = [r for r in self.reports if r.run_id == "run_1" and r.attempt == attempt and r.state != "running"]
        return ends[-1] if ends else None

    def text(self):
        return "".join(m.data for m in self.logs if isinstance(m, JobLog))


def attempt(command, *, epoch=1, number=1, timeout_s=None, **kw):
    return JobAttempt(run_id="run_1", tenant="default", job="greet", step="main", attempt=number, epoch=epoch,
                      service_id="echo", version="1.0.0", command=tuple(command), timeout_s=timeout_s, **kw)


@pytest.fixture
async def runner(nursery, tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "greet.sh").write_text('echo "hello $FLOWCTL_PARAM_WHO from $(basename $PWD)"; echo "$MODE"\n')
    installs = []

    async def install(service, version):
        installs.append((service, version))
        if service == "missing":
            raise LookupError("no service 'missing' in the hub")
        return tree

    plane = Plane()
    r = NodeJobRunner(tmp_path / "attempts", install, plane.send, grace_s=0.5, node="n1")
    await nursery.start(r.run)
    r.plane, r.installs = plane, installs
    return r


async def test_a_script_in_the_installed_tree_with_a_parameter(runner):
    await runner.handle(attempt(["sh", "greet.sh"], params={"who": "ada"}, env={"MODE": "fast"}))
    await runner.handle(attempt(["sh", "greet.sh"], params={"who": "ada"}))  # sent twice: runs once
    with trio.fail_after(10):
        await wait_until(lambda: runner.plane.final() is not None)
    # `running` first unless it ended within RUNNING_REPORT_DELAY_S (then the final report says both).
    assert [r.state for r in runner.plane.reports] in (["running", "succeeded"], ["succeeded"])
    assert runner.plane.final().exit_code == 0 and runner.installs == [("echo", "1.0.0")]
    assert runner.plane.text() == "hello ada from tree\nfast\n"
    assert runner.running() == []


async def test_a_quick_command_is_one_report_and_a_slow_one_says_running_first(runner, monkeypatch):
    monkeypatch.setattr(jobs, "RUNNING_REPORT_DELAY_S", 30.0)  # `true` surely ends before this
    await runner.handle(attempt(["true"]))
    with trio.fail_after(10):
        await wait_until(lambda: runner.plane.final() is not None)
    assert [r.state for r in runner.plane.reports] == ["succeeded"]
    monkeypatch.setattr(jobs, "RUNNING_REPORT_DELAY_S", 0.0)
    await runner.handle(attempt(["sleep", "0.3"], number=2))
    with trio.fail_after(10):
        await wait_until(lambda: runner.plane.final(2) is not None)
    assert [r.state for r in runner.plane.reports if r.attempt == 2] == ["running", "succeeded"]
    await runner.handle(attempt(["true"], number=3))  # the bundle was installed a moment ago: not asked again
    with trio.fail_after(10):
        await wait_until(lambda: runner.plane.final(3) is not None)
    assert runner.installs == [("echo", "1.0.0")]


async def test_an_older_epoch_is_refused(runner):
    await runner.handle(attempt(["true"], epoch=5))
    await runner.handle(attempt(["true"], epoch=4, number=2))
    with trio.fail_after(10):
        await wait_until(lambda: runner.plane.final(1) is not None and runner.plane.final(2) is not None)
    refused = runner.plane.final(2)
    assert refused.state == "failed" and refused.reason == "refused a dispatch from leader epoch 4; epoch 5 is current"
    assert runner.plane.final(1).state == "succeeded"
    await runner.handle(JobCancel("run_1", "main", 1, epoch=3))
    assert runner.plane.reports[-1].reason.startswith("refused a dispatch from leader epoch 3")


async def test_cancel_stops_the_process_group_within_two_seconds(runner, tmp_path):
    marker = tmp_path / "child"
    await runner.handle(attempt(["sh", "-c", f"sleep 60 & echo $! > {marker}; wait"]))
    with trio.fail_after(10):
        await wait_until(lambda: marker.exists() and marker.read_text().strip() and runner.running())
    assert [r.state for r in runner.running()] == ["running"]
    child = int(marker.read_text())
    started = time.monotonic()
    await runner.handle(JobCancel("run_1", "main", 1, epoch=1, reason="cancelled by request"))
    with trio.fail_after(2):
        await wait_until(lambda: runner.plane.final() is not None and not _running(child))
    assert time.monotonic() - started < 2
    assert runner.plane.final().state == "cancelled" and runner.plane.final().reason == "cancelled by request"


async def test_timeout_install_failure_and_a_missing_command(runner):
    await runner.handle(attempt(["sleep", "30"], timeout_s=0.5))
    await runner.handle(JobAttempt("run_2", "default", "greet", "main", 1, 1, "missing", "1.0.0", ("true",)))
    await runner.handle(attempt(["no-such-command-xyz"], number=3))
    with trio.fail_after(10):
        await wait_until(lambda: runner.plane.final(1) is not None and runner.plane.final(3) is not None
                         and any(r.run_id == "run_2" for r in runner.plane.reports))
    assert runner.plane.final(1).state == "timed_out" and runner.plane.final(1).reason == "timed out after 0.5 s"
    missing = next(r for r in runner.plane.reports if r.run_id == "run_2")
    assert missing.state == "failed" and missing.reason == "cannot install missing@1.0.0: no service 'missing' in the hub"
    assert runner.plane.final(3).state == "failed" and "command not found: 'no-such-command-xyz'" in runner.plane.final(3).reason


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_a_bundle_venv_comes_first_on_the_path(nursery, tmp_path):
    tree, venv = tmp_path / "tree", tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    tree.mkdir()
    tool = venv / "bin" / "bundle-tool"
    tool.write_text("#!/bin/sh\necho from the venv $VIRTUAL_ENV\n")
    tool.chmod(0o755)

    async def install(service, version):
        return tree, str(venv)

    plane = Plane()
    r = NodeJobRunner(tmp_path / "attempts", install, plane.send, grace_s=0.5, node="n1")
    await nursery.start(r.run)
    await r.handle(attempt(["bundle-tool"]))
    with trio.fail_after(10):
        await wait_until(lambda: plane.final() is not None)
    assert plane.final().state == "succeeded", plane.final()
    await wait_until(lambda: f"from the venv {venv}" in plane.text())


def batch_of(entries):
    return decode_plane_message(json.dumps({"type": "job_attempts", "attempts": entries}))


async def test_a_batch_is_fenced_attempt_by_attempt_and_a_bad_entry_is_refused_alone(runner):
    entries = [msgspec.to_builtins(attempt(["true"], epoch=epoch, number=n))
               for n, epoch in ((1, 5), (2, 4), (3, 5))]
    bad = {**msgspec.to_builtins(attempt(["true"], epoch=5, number=4)), "timeout_s": "soon"}
    entries.append(bad)
    await runner.handle_batch(batch_of(entries))
    with trio.fail_after(10):
        await wait_until(lambda: all(runner.plane.final(n) is not None for n in (1, 2, 3, 4)))
    assert [runner.plane.final(n).state for n in (1, 2, 3, 4)] == ["succeeded", "failed", "succeeded", "failed"]
    assert runner.plane.final(2).reason == "refused a dispatch from leader epoch 4; epoch 5 is current"
    assert runner.plane.final(4).reason.startswith("job_attempts entry 3 is invalid: Expected `float | null`")
    assert runner.plane.final(4).epoch == 5


async def test_a_batch_that_is_not_a_list_is_refused_and_the_next_attempts_run(runner, caplog):
    await runner.handle_batch(batch_of("nope"))
    await runner.handle_batch(batch_of([msgspec.to_builtins(attempt(["true"]))] * (MAX_ENTRIES + 1)))
    assert runner.plane.reports == [] and "must be a JSON array" in caplog.text and "exceeds" in caplog.text
    await runner.handle_batch(JobAttempts(msgspec.Raw(b"[]")))  # empty: nothing to do
    await runner.handle(attempt(["true"], number=1))
    with trio.fail_after(10):
        await wait_until(lambda: runner.plane.final(1) is not None)
    assert runner.plane.final(1).state == "succeeded"
