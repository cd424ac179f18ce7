"""The node agent's connection loop against an in-memory control plane, on Trio's autojump clock:
heartbeats, reconnect backoff (exponential, full jitter, reset after a stable connection), a
refused join, and a forwarded request that fails without ending the session."""

import itertools
import json
import random
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio_websocket

from runtime.control import messages
from runtime.control.messages import Heartbeat, Hello, Welcome
from runtime.exception_groups import collapse
from runtime.node.agent import AgentConfig, JoinRefused, connection, run_agent, sysinfo
from runtime.node.agent.connection import STABLE_AFTER, backoff_delay
from runtime.tunnel import StreamReset, TunnelError, open_mux
from runtime.tunnel.http import send_request
from tests.polling import wait_until
from tests.runtime.tunnel.test_mux import transport_pair

LIMIT = 3600  # virtual seconds: on the autojump clock a hang fails at once, not after an hour


class FakeExecutor:
    """Nothing installed or running; `worker_url` answers from `urls` (a callable may raise)."""

    def __init__(self, urls=None):
        self.urls = urls or {}

    def inventory(self):
        return (), ()

    def apply(self, assign, hub_url, report):
        pass

    def worker_url(self, replica_id):
        found = self.urls.get(replica_id)
        return found() if callable(found) else found


class FakePlane:
    """An in-memory control plane. Each connection attempt takes the next step of `steps`:
    an int refuses it with that HTTP status; a number of seconds (float) accepts it, welcomes
    the node and drops the connection after that long; None accepts it for good."""

    def __init__(self, nursery, steps=(), *, heartbeat_interval=5.0):
        self.nursery = nursery
        self.steps = list(steps)
        self.heartbeat_interval = heartbeat_interval
        self.attempts = []      # virtual time of each connection attempt
        self.dropped = []       # virtual time each accepted connection was dropped
        self.heartbeats = []    # (virtual time, Heartbeat)
        self.mux = None         # the plane's end of the live connection
        self.settled = trio.Event()  # a connection accepted for good is up

    @asynccontextmanager
    async def connect(self, config, bearer):
        self.attempts.append(trio.current_time())
        step = self.steps.pop(0) if self.steps else None
        if isinstance(step, int):
            body = json.dumps({"detail": f"refused with {step}"}).encode()
            raise trio_websocket.ConnectionRejected(step, (), body)
        node_end, plane_end = transport_pair()
        self.nursery.start_soon(self._serve, plane_end, step)
        try:
            yield node_end
        finally:
            await node_end.close()

    async def _serve(self, transport, hold_for):
        try:
            async with open_mux(transport, opener=False) as mux:
                hello = messages.decode_node_message(await mux.receive_control())
                assert isinstance(hello, Hello)
                await mux.send_control(messages.encode(Welcome(
                    node_id=hello.node_id, cluster_id="c1", heartbeat_interval_s=self.heartbeat_interval,
                    hub_url="http://hub.invalid")))
                self.mux = mux
                if hold_for is None:
                    self.settled.set()
                with trio.move_on_after(float("inf") if hold_for is None else hold_for):
                    while True:
                        message = messages.decode_node_message(await mux.receive_control())
                        if isinstance(message, Heartbeat):
                            self.heartbeats.append((trio.current_time(), message))
                self.dropped.append(trio.current_time())
        except TunnelError:
            pass  # the node went away first
        finally:
            await transport.close()


class TopOfRange:
    """A stand-in rng that always draws the top of the range and records each range."""

    def __init__(self):
        self.ranges = []

    def uniform(self, low, high):
        self.ranges.append((low, high))
        return high


@pytest.fixture(autouse=True)
def no_gpu_probe(monkeypatch):
    async def no_gpus():
        return ()

    monkeypatch.setattr(sysinfo, "nvidia_gpus", no_gpus)


@pytest.fixture
def top_of_range(monkeypatch):
    """Make each backoff the top of its jitter range, so the waits are exact."""
    stub = TopOfRange()

    def at_the_top(attempt, *, initial, maximum, rng):
        return backoff_delay(attempt, initial=initial, maximum=maximum, rng=stub)

    monkeypatch.setattr(connection, "backoff_delay", at_the_top)
    return stub


def config(**kwargs):
    return AgentConfig(url="http://plane.invalid", token="fjt_token", node_id="n1", name="desk", **kwargs)


def gaps(times):
    return [round(b - a, 6) for a, b in itertools.pairwise(times)]


@pytest.mark.parametrize("interval", [2.5, 5.0, 15.0])
async def test_heartbeats_follow_the_welcomes_interval(autojump_clock, nursery, interval):
    plane = FakePlane(nursery, heartbeat_interval=interval)
    with trio.fail_after(LIMIT):
        welcome = await nursery.start(partial(run_agent, config(), FakeExecutor(), connect=plane.connect))
        welcomed_at = trio.current_time()
        assert welcome.heartbeat_interval_s == interval
        await trio.sleep(interval * 6 + interval / 2)
    times = [at for at, _ in plane.heartbeats]
    assert [beat.seq for _, beat in plane.heartbeats] == [1, 2, 3, 4, 5, 6]
    assert times[0] - welcomed_at == pytest.approx(interval)
    assert gaps(times) == [interval] * 5
    assert len(plane.attempts) == 1


def test_backoff_delay_is_full_jitter_under_an_exponential_cap():
    rng = random.Random(13)
    for attempt, cap in [(0, 0.5), (1, 1.0), (2, 2.0), (5, 16.0), (6, 30.0), (40, 30.0)]:
        draws = [backoff_delay(attempt, initial=0.5, maximum=30.0, rng=rng) for _ in range(2000)]
        assert all(0 <= d <= cap for d in draws)
        # Full jitter: the draws cover the whole range, not just its top.
        assert min(draws) < cap * 0.05 and max(draws) > cap * 0.95


async def test_reconnects_back_off_exponentially_up_to_the_cap(autojump_clock, nursery, top_of_range):
    plane = FakePlane(nursery, [503] * 7)
    with trio.fail_after(LIMIT):
        await nursery.start(partial(run_agent, config(backoff_initial=1, backoff_max=8),
                                    FakeExecutor(), connect=plane.connect))
    assert gaps(plane.attempts) == [1, 2, 4, 8, 8, 8, 8]
    assert all(low == 0 for low, _ in top_of_range.ranges)  # drawn from [0, cap]: full jitter


@pytest.mark.parametrize(("held", "waits_after"), [
    (STABLE_AFTER + 1, [1, 2]),  # a stable connection resets the backoff
    (STABLE_AFTER - 1, [8, 16]),  # a short one does not
])
async def test_backoff_resets_after_a_stable_connection(autojump_clock, nursery, top_of_range,
                                                        held, waits_after):
    plane = FakePlane(nursery, [503, 503, 503, float(held), 503, 503])
    with trio.fail_after(LIMIT):
        await nursery.start(partial(run_agent, config(backoff_initial=1, backoff_max=64),
                                    FakeExecutor(), connect=plane.connect))
        await plane.settled.wait()
    assert gaps(plane.attempts[:4]) == [1, 2, 4]
    [dropped] = plane.dropped
    assert dropped - plane.attempts[3] == pytest.approx(held)
    assert gaps([dropped, *plane.attempts[4:6]]) == waits_after


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_join_raises_join_refused_without_retrying(autojump_clock, nursery, status):
    plane = FakePlane(nursery, [status])
    with trio.fail_after(LIMIT), pytest.raises(JoinRefused) as info:
        await run_agent(config(), FakeExecutor(), connect=plane.connect)
    assert f"HTTP {status}" in str(info.value) and f"refused with {status}" in str(info.value)
    assert "the join token" in str(info.value)
    assert len(plane.attempts) == 1


def broken():
    raise RuntimeError("a bug in the node")


def broken_in_a_group():
    raise ExceptionGroup("forwarding", [KeyError("replica"), ValueError("head")])


async def test_a_request_that_fails_unexpectedly_ends_only_that_request(autojump_clock, nursery):
    executor = FakeExecutor({"bug": broken, "bugs": broken_in_a_group})
    plane = FakePlane(nursery, heartbeat_interval=5)
    with trio.fail_after(LIMIT):
        await nursery.start(partial(run_agent, config(), executor, connect=plane.connect))
        for replica in ("bug", "bugs"):
            with pytest.raises(StreamReset, match="the node failed to relay this request"), collapse():
                await send_request(plane.mux, "POST", "/v1/chat/completions", route={"replica_id": replica})
        # The session lives on: it still answers requests and heartbeats, on the same connection.
        reply = await send_request(plane.mux, "POST", "/v1/chat/completions", route={"replica_id": "gone"})
        assert reply.status == 503
        beats = len(plane.heartbeats)
        await trio.sleep(12)
    assert len(plane.heartbeats) == beats + 2
    assert len(plane.attempts) == 1 and plane.dropped == []


async def test_a_lost_connection_says_why_and_a_reconnect_says_how_long_it_was_away(
        autojump_clock, nursery, top_of_range, caplog):
    plane = FakePlane(nursery, [10.0, 503, 503, None])
    with trio.fail_after(LIMIT):
        await nursery.start(partial(run_agent, config(backoff_initial=1, backoff_max=64),
                                    FakeExecutor(), connect=plane.connect))
        await plane.settled.wait()
        await wait_until(lambda: any("reconnected" in r.getMessage() for r in caplog.records))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    lost = [w for w in warnings if w.startswith("control plane connection lost: ")]
    assert lost and all(w.removeprefix("control plane connection lost: ").strip() for w in lost), warnings
    assert warnings[-1] == "reconnected to the control plane after 7.0 s", warnings


class LoggingExecutor(FakeExecutor):
    """A FakeExecutor whose replicas' worker log tails are `tails` (changed by the test)."""

    def __init__(self):
        super().__init__()
        self.tails = {"r1": ("starting",), "r2": ("listening",)}

    def log_tails(self):
        return dict(self.tails)


async def test_heartbeats_carry_only_the_worker_log_tails_that_changed(autojump_clock, nursery):
    plane = FakePlane(nursery, heartbeat_interval=5.0)
    executor = LoggingExecutor()
    with trio.fail_after(LIMIT):
        await nursery.start(partial(run_agent, config(), executor, connect=plane.connect))
        await wait_until(lambda: len(plane.heartbeats) >= 2)
        executor.tails = {"r1": ("starting", "ready")}  # r2 gone, r1 said more
        await wait_until(lambda: len(plane.heartbeats) >= 4)
    logs = [beat.logs for _, beat in plane.heartbeats]
    assert logs[0] == {"r1": ("starting",), "r2": ("listening",)}
    assert logs[1] == {}  # nothing new: nothing sent
    assert {"r1": ("starting", "ready")} in logs[2:4] and {} in logs[2:4]
