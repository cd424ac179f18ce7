"""The plane's sends of job attempts: those for one node in one scheduling round go in one
`job_attempts` message to a node that announced `job_batch`, one message each to a node that
did not, and a node that is not connected fails every sender (nothing sent)."""

import trio

from runtime.control.job_batches import unpack_attempts
from runtime.control.messages import JobAttempt, JobAttempts, decode_plane_message
from runtime.jobs.node_sends import AttemptSends
from runtime.tunnel import TunnelClosed, TunnelError


class Mux:
    def __init__(self):
        self.sent = []
        self.closed = False

    async def send_control(self, text):
        if self.closed:
            raise TunnelClosed("connection closed")
        self.sent.append(decode_plane_message(text))
        await trio.lowlevel.checkpoint()


def attempt(node, n):
    return JobAttempt(run_id=f"run_{node}_{n}", tenant="default", job="j", step="s", attempt=1, epoch=3,
                      service_id="echo", version="1.0.0", command=("true",))


async def send_round(sends, plan):
    """Send every (node, attempt) of `plan` from its own task, all in one round; the errors by run id."""
    errors = {}

    async def one(node, message):
        try:
            await sends.send(node, message)
        except TunnelError as e:
            errors[message.run_id] = str(e)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for node, message in plan:
                nursery.start_soon(one, node, message)
    return errors


async def test_a_round_goes_as_one_batch_to_a_batching_node_and_singly_to_an_older_one():
    muxes = {"new": Mux(), "old": Mux()}
    sends = AttemptSends(muxes.get, lambda node: node == "new")
    plan = [(node, attempt(node, n)) for n in range(3) for node in ("new", "old")]
    assert await send_round(sends, plan) == {}
    (batch,) = muxes["new"].sent
    assert isinstance(batch, JobAttempts)
    assert sorted(a.run_id for a in unpack_attempts(batch)[0]) == [f"run_new_{n}" for n in range(3)]
    assert all(isinstance(m, JobAttempt) for m in muxes["old"].sent)
    assert sorted(m.run_id for m in muxes["old"].sent) == [f"run_old_{n}" for n in range(3)]
    # The next round is a message of its own; a lone attempt goes as a plain job_attempt.
    assert await send_round(sends, [("new", attempt("new", 9))]) == {}
    assert muxes["new"].sent[-1] == attempt("new", 9)


async def test_a_node_not_connected_or_closed_fails_its_senders_only():
    closed = Mux()
    closed.closed = True
    muxes = {"up": Mux(), "closed": closed}
    sends = AttemptSends(muxes.get, lambda node: True)
    plan = [(node, attempt(node, n)) for n in range(2) for node in ("up", "gone", "closed")]
    errors = await send_round(sends, plan)
    assert sorted(errors) == ["run_closed_0", "run_closed_1", "run_gone_0", "run_gone_1"]
    assert errors["run_gone_0"] == "node gone is not connected"
    assert len(muxes["up"].sent) == 1 and isinstance(muxes["up"].sent[0], JobAttempts)
