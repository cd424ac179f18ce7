"""The node's three packages re-export their public names, and each error tree hangs off FlowError."""

import importlib

import pytest

from runtime.errors import FlowError
from runtime.node.agent.errors import AgentError
from runtime.node.packages.errors import PackageError
from runtime.node.workers.errors import SupervisionError

PACKAGES = ("runtime.node", "runtime.node.packages", "runtime.node.workers", "runtime.node.agent")


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_name_exists(name):
    package = importlib.import_module(name)
    for public in package.__all__:
        assert getattr(package, public) is not None, public


def test_the_node_re_exports_the_package_manager():
    import runtime.node
    import runtime.node.packages

    assert set(runtime.node.__all__) <= set(runtime.node.packages.__all__)


@pytest.mark.parametrize(("name", "base"), [
    ("runtime.node.packages", PackageError),
    ("runtime.node.workers", SupervisionError),
    ("runtime.node.agent", AgentError),
])
def test_each_package_has_one_error_tree_under_flow_error(name, base):
    package = importlib.import_module(name)
    errors = [getattr(package, n) for n in package.__all__
              if isinstance(getattr(package, n), type) and issubclass(getattr(package, n), Exception)]
    assert base in errors and issubclass(base, FlowError)
    assert all(issubclass(error, base) for error in errors)
