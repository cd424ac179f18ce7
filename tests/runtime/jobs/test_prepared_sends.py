"""Attempts prepared ahead, sent at their instant by one task: all recorded dispatched in one
store call first, then each node's in one message; a waiter cancelled before the instant
withdraws its attempt, one cancelled after it was taken still has it sent; a store or link
failure is told to the waiters it concerns. Autojump clock; the links are stand-ins."""

import pytest
import trio

from runtime.control.job_batches import unpack_attempts
from runtime.control.messages import JobAttempts
from runtime.jobs.errors import JobError
from runtime.jobs.node_sends import AttemptSends
from runtime.jobs.prepared_sends import PreparedSends
from runtime.tunnel import TunnelError

from .test_node_sends import Mux, attempt


class Marks:
    def __init__(self, fail=False):
        self.calls, self.fail = [], fail

    async def __call__(self, keys):
        await trio.lowlevel.checkpoint()
        if self.fail:
            raise OSError("disk I/O error")
        self.calls.append((trio.current_time(), sorted(keys)))


def received(mux):
    out = []
    for message in mux.sent:
        out += unpack_attempts(message)[0] if isinstance(message, JobAttempts) else [message]
    return sorted(m.run_id for m in out)


@pytest.fixture
async def setup(nursery):
    muxes = {"a": Mux(), "b": Mux()}
    marks = Marks()
    prepared = PreparedSends(AttemptSends(muxes.get, lambda node: True), marks)
    nursery.start_soon(prepared.run)
    return prepared, muxes, marks


async def test_an_instants_attempts_are_marked_in_one_call_then_sent_per_node_at_it(setup, autojump_clock):
    prepared, muxes, marks = setup
    at = trio.current_time() + 5
    sent_at = {}

    async def one(node, message):
        await prepared.send(at, node, message)
        sent_at[message.run_id] = trio.current_time()

    async with trio.open_nursery() as nursery:
        for n in range(3):
            for node in ("a", "b"):
                nursery.start_soon(one, node, attempt(node, n))
        await trio.sleep(4.9)
        assert marks.calls == [] and muxes["a"].sent == []  # nothing before the instant
    (when, keys), = marks.calls
    assert when == at and len(keys) == 6 and keys[0] == ("run_a_0", "s", 1)
    assert [len(muxes[n].sent) for n in "ab"] == [1, 1]  # one job_attempts message per node
    assert received(muxes["a"]) == ["run_a_0", "run_a_1", "run_a_2"]
    assert set(sent_at.values()) == {at}


async def test_a_waiter_cancelled_before_the_instant_withdraws_its_attempt(setup, autojump_clock):
    prepared, muxes, marks = setup
    at = trio.current_time() + 5
    async with trio.open_nursery() as nursery:
        nursery.start_soon(prepared.send, at, "a", attempt("a", 1))
        with trio.move_on_after(2):
            await prepared.send(at, "a", attempt("a", 2))
    assert [keys for _, keys in marks.calls] == [[("run_a_1", "s", 1)]]
    assert received(muxes["a"]) == ["run_a_1"]


async def test_a_waiter_cancelled_once_its_attempt_was_taken_still_has_it_sent(nursery, autojump_clock):
    muxes = {"a": Mux()}
    release = trio.Event()

    async def slow_marks(keys):
        await release.wait()

    prepared = PreparedSends(AttemptSends(muxes.get, lambda node: True), slow_marks)
    nursery.start_soon(prepared.run)
    returned = []
    scope = trio.CancelScope()

    async def one():
        with scope:
            await prepared.send(trio.current_time() + 1, "a", attempt("a", 1))
            returned.append(trio.current_time())
            await trio.sleep(100)  # the cancellation, still pending, lands here

    async with trio.open_nursery() as inner:
        inner.start_soon(one)
        await trio.sleep(1.5)  # taken, its marking under way
        scope.cancel()
        await trio.sleep(0.1)
        assert returned == []  # waits for the send
        release.set()
    assert received(muxes["a"]) == ["run_a_1"] and len(returned) == 1


async def test_a_store_failure_fails_every_waiter_and_sends_nothing(nursery, autojump_clock):
    muxes = {"a": Mux()}
    prepared = PreparedSends(AttemptSends(muxes.get, lambda node: True), Marks(fail=True))
    nursery.start_soon(prepared.run)
    errors = []

    async def one(n):
        try:
            await prepared.send(trio.current_time() + 1, "a", attempt("a", n))
        except JobError as e:
            errors.append(str(e))

    async with trio.open_nursery() as inner:
        for n in range(3):
            inner.start_soon(one, n)
    assert errors == ["could not record the attempt dispatched: disk I/O error"] * 3
    assert muxes["a"].sent == []


async def test_a_node_not_connected_fails_only_its_own_waiters(setup, autojump_clock):
    prepared, muxes, marks = setup
    at = trio.current_time() + 1
    outcomes = {}

    async def one(node, n):
        try:
            await prepared.send(at, node, attempt(node, n))
            outcomes[(node, n)] = "sent"
        except TunnelError as e:
            outcomes[(node, n)] = str(e)

    async with trio.open_nursery() as inner:
        for node in ("a", "gone"):
            inner.start_soon(one, node, 1)
    assert outcomes == {("a", 1): "sent", ("gone", 1): "node gone is not connected"}


async def test_an_instant_already_past_is_sent_at_once(setup, autojump_clock):
    prepared, muxes, _ = setup
    await trio.sleep(3)
    began = trio.current_time()
    await prepared.send(began - 2, "b", attempt("b", 1))
    assert trio.current_time() == began and received(muxes["b"]) == ["run_b_1"]


async def test_waiters_left_when_it_stops_are_told_so(autojump_clock):
    muxes = {"a": Mux()}
    prepared = PreparedSends(AttemptSends(muxes.get, lambda node: True), Marks())
    errors = []

    async def one():
        try:
            await prepared.send(trio.current_time() + 10, "a", attempt("a", 1))
        except JobError as e:
            errors.append(str(e))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        with trio.move_on_after(1):
            await prepared.run()
    assert errors == ["not sent: the plane is stopping"] and muxes["a"].sent == []


async def test_a_link_that_fails_oddly_fails_only_its_own_waiters(setup, autojump_clock):
    prepared, muxes, _ = setup

    class Broken:
        async def send_control(self, text):
            raise ValueError("frame too large")

    muxes["odd"] = Broken()
    at = trio.current_time() + 1
    outcomes = {}

    async def one(node):
        try:
            await prepared.send(at, node, attempt(node, 1))
            outcomes[node] = "sent"
        except TunnelError as e:
            outcomes[node] = str(e)

    async with trio.open_nursery() as inner:
        for node in ("odd", "a"):
            inner.start_soon(one, node)
    assert outcomes == {"a": "sent", "odd": "could not send to node odd: ValueError('frame too large')"}
    await prepared.send(trio.current_time(), "a", attempt("a", 2))  # it still runs
    assert received(muxes["a"]) == ["run_a_1", "run_a_2"]
