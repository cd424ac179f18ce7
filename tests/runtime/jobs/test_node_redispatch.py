"""An attempt sent to a node again (a new leader re-sending what a dead one dispatched): after it
ended there it is answered with its recorded end, never run a second time; as a `resend`, one an
earlier agent process started is reported lost, and one never received runs once."""

import msgspec
import pytest
import trio

from runtime.control.messages import JobAttempt, JobReport, decode_node_message, encode
from runtime.node.agent import jobs
from runtime.node.agent.jobs import NodeJobRunner
from tests.polling import wait_until


class Plane:
    def __init__(self):
        self.reports = []

    async def send(self, message):
        message = decode_node_message(encode(message))
        if isinstance(message, JobReport):
            self.reports.append(message)
        await trio.lowlevel.checkpoint()

    def ends(self, attempt=1):
        return [r for r in self.reports if r.attempt == attempt and r.state != "running"]


def attempt(command, *, epoch=1, number=1):
    return JobAttempt(run_id="run_1", tenant="default", job="count", step="main", attempt=number, epoch=epoch,
                      service_id="echo", version="1.0.0", command=tuple(command))


@pytest.fixture
async def runner(nursery, tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "count.sh").write_text(f'echo ran >> {tmp_path / "runs.txt"}; exit "${{CODE:-0}}"\n')

    async def install(service, version):
        return tree

    plane = Plane()
    r = NodeJobRunner(tmp_path / "attempts", install, plane.send, grace_s=0.5, node="n1")
    await nursery.start(r.run)
    r.plane, r.runs = plane, tmp_path / "runs.txt"
    return r


def runs(runner):
    return runner.runs.read_text().count("ran") if runner.runs.exists() else 0


async def test_a_finished_attempt_sent_again_by_a_newer_leader_reports_its_end_and_does_not_run(runner):
    await runner.handle(attempt(["sh", "count.sh"], epoch=1))
    with trio.fail_after(10):
        await wait_until(lambda: runner.plane.ends())
    await runner.handle(attempt(["sh", "count.sh"], epoch=2))  # the new leader re-sends attempt 1
    with trio.fail_after(10):
        await wait_until(lambda: len(runner.plane.ends()) == 2)
    first, again = runner.plane.ends()
    assert (first.state, first.exit_code, first.epoch) == ("succeeded", 0, 1)
    assert (again.state, again.exit_code, again.epoch) == ("succeeded", 0, 2)  # under the epoch that asked
    assert runs(runner) == 1


async def test_a_failed_end_is_repeated_as_it_was(runner, tmp_path):
    (tmp_path / "tree" / "fail.sh").write_text(f'echo ran >> {runner.runs}; exit 3\n')
    await runner.handle(attempt(["sh", "fail.sh"]))
    with trio.fail_after(10):
        await wait_until(lambda: runner.plane.ends())
    await runner.handle(attempt(["sh", "fail.sh"]))
    with trio.fail_after(10):
        await wait_until(lambda: len(runner.plane.ends()) == 2)
    assert [(r.state, r.exit_code) for r in runner.plane.ends()] == [("failed", 3), ("failed", 3)]
    assert runs(runner) == 1


async def test_a_new_attempt_number_still_runs(runner):
    await runner.handle(attempt(["sh", "count.sh"], number=1))
    with trio.fail_after(10):
        await wait_until(lambda: runner.plane.ends(1))
    await runner.handle(attempt(["sh", "count.sh"], number=2))  # a retry is another attempt: it runs
    with trio.fail_after(10):
        await wait_until(lambda: runner.plane.ends(2))
    assert runs(runner) == 2


async def test_the_memory_of_ended_attempts_is_bounded(runner, monkeypatch):
    monkeypatch.setattr(jobs, "ENDED_KEPT", 2)
    for number in (1, 2, 3):
        await runner.handle(attempt(["true"], number=number))
        with trio.fail_after(10):
            await wait_until(lambda n=number: runner.plane.ends(n))
    await runner.handle(attempt(["sh", "count.sh"], number=1))  # forgotten (oldest of 3, 2 kept): runs
    with trio.fail_after(10):
        await wait_until(lambda: len(runner.plane.ends(1)) == 2)
    assert runs(runner) == 1


def resent(command, **kw):
    return msgspec.structs.replace(attempt(command, **kw), resend=True)


async def test_a_resend_of_an_attempt_an_earlier_agent_process_started_is_reported_lost_not_run(runner, tmp_path):
    (tmp_path / "attempts" / "run_1" / "main.1").mkdir(parents=True)  # that process died; its group with it
    await runner.handle(resent(["sh", "count.sh"], epoch=2))
    with trio.fail_after(10):
        await wait_until(lambda: runner.plane.ends())
    [report] = runner.plane.ends()
    assert (report.state, report.epoch) == ("lost", 2) and "agent restarted" in report.reason
    assert runs(runner) == 0


async def test_a_resend_of_an_attempt_never_received_runs_it_once(runner):
    await runner.handle(resent(["sh", "count.sh"], epoch=2))
    with trio.fail_after(10):
        await wait_until(lambda: runner.plane.ends())
    assert [r.state for r in runner.plane.ends()] == ["succeeded"] and runs(runner) == 1


async def test_a_resend_of_an_attempt_ended_here_repeats_its_end(runner):
    await runner.handle(attempt(["sh", "count.sh"]))
    with trio.fail_after(10):
        await wait_until(lambda: runner.plane.ends())
    await runner.handle(resent(["sh", "count.sh"], epoch=2))
    with trio.fail_after(10):
        await wait_until(lambda: len(runner.plane.ends()) == 2)
    assert [(r.state, r.epoch) for r in runner.plane.ends()] == [("succeeded", 1), ("succeeded", 2)]
    assert runs(runner) == 1
