"""A node's job messages to the plane: to a plane that takes `job_reports`, the reports of one
scheduling round in one message and runs of buffered reports batched, order kept around log
pieces; to an older plane, one message each."""

import trio

from runtime.control.job_batches import unpack_reports
from runtime.control.messages import JobLog, JobReport, JobReports, decode_node_message
from runtime.node.agent.job_outbox import JobOutbox


class Mux:
    def __init__(self):
        self.sent = []

    async def send_control(self, text):
        self.sent.append(decode_node_message(text))
        await trio.lowlevel.checkpoint()


def report(n, state="succeeded"):
    return JobReport(f"run_{n}", "s", 1, 1, state)


def flat(sent):
    """The messages sent, batches unpacked."""
    return [m for message in sent
            for m in (unpack_reports(message)[0] if isinstance(message, JobReports) else [message])]


async def test_buffered_reports_go_batched_in_order_around_log_pieces():
    outbox = JobOutbox()
    queued = [report(1), JobLog("run_1", "s", 1, "a\n"), report(2), report(3)]
    for message in queued:
        await outbox.send(message)  # no session yet: kept
    mux = Mux()
    await outbox.attach(mux, [report(4, "running")], batch=True)
    assert [type(m) for m in mux.sent] == [JobReport, JobLog, JobReports]
    assert flat(mux.sent) == [*queued, report(4, "running")]


async def test_the_reports_of_one_round_go_in_one_message():
    outbox = JobOutbox()
    mux = Mux()
    await outbox.attach(mux, [], batch=True)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for n in range(5):
                nursery.start_soon(outbox.send, report(n))
    (batch,) = mux.sent
    assert sorted(r.run_id for r in unpack_reports(batch)[0]) == [f"run_{n}" for n in range(5)]


async def test_an_older_plane_gets_one_message_each():
    outbox = JobOutbox()
    mux = Mux()
    await outbox.send(report(1))
    await outbox.send(report(2))
    await outbox.attach(mux, [])
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for n in range(3, 6):
                nursery.start_soon(outbox.send, report(n))
    assert all(isinstance(m, JobReport) for m in mux.sent) and len(mux.sent) == 5
