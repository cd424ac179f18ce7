import pytest

from runtime.node import FetchPolicy, InstallOptions, NodeLayout
from tests.runtime.node.packages.fakehub import FakeHub

FAST = FetchPolicy(stall_window=0.5, min_rate=1024, attempts=4, backoff_initial=0.01,
                   backoff_max=0.05)


@pytest.fixture
async def hub(nursery):
    h = FakeHub()
    await nursery.start(h.serve)
    return h


@pytest.fixture
def layout(tmp_path):
    return NodeLayout.create(tmp_path / "node")


@pytest.fixture
def options():
    return InstallOptions(policy=FAST, venv=False)
