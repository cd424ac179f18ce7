"""Helpers for the job engine's tests: a wall clock that follows Trio's (autojump) clock,
job specs from dicts, and an engine running in a nursery."""

from contextlib import asynccontextmanager

import pytest
import trio

from runtime.jobs.engine import JobEngine
from runtime.jobs.lease import SoloLease
from runtime.jobs.schema import parse_job
from runtime.jobs.store import RunStore

T0 = 1_800_000_000  # 2027-01-15T08:00:00Z, a whole minute


class WallClock:
    """Epoch seconds that start at T0 when the test starts and advance with trio.current_time()."""

    def __init__(self, start=T0):
        self._start, self._offset = start, None

    def __call__(self) -> float:
        if self._offset is None:
            self._offset = self._start - trio.current_time()
        return self._offset + trio.current_time()


@pytest.fixture
def wall(autojump_clock):
    return WallClock()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.engines)])
def store(request, tmp_path):
    """The jobs store on SQLite (DATA_DIR/jobs.db), then on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        s = RunStore(tmp_path / "jobs.db")
        yield s
        s.close()
        return
    from hub_store import sql

    state = sql.State.parse(request.getfixturevalue("postgres_url"))
    s = RunStore(state)
    yield s
    s.close()
    state.close()


def job(name="j", trigger=None, steps=None, **extra):
    """A validated JobSpec; one `true`-like command step unless `steps` says otherwise."""
    doc = {"name": name, "trigger": trigger or {"type": "manual"},
           "steps": steps or [{"name": "main", "service": "echo@stable", "command": ["true"]}], **extra}
    return parse_job(doc)


async def inline(fn):
    """Run a store call on the event loop: worker threads would let autojump_clock skip ahead
    while SQLite works, making virtual times depend on thread timing."""
    await trio.lowlevel.checkpoint()
    return fn()


@asynccontextmanager
async def running(store, executor, wall, lease=None, **kw):
    """An engine leading on `store` until the block ends (then stopped, as a plane would be)."""
    kw.setdefault("offload", inline)
    engine = JobEngine(store, executor, lease or SoloLease(), clock=wall, **kw)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        yield engine
        nursery.cancel_scope.cancel()
