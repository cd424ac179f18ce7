"""The Files and Batches API's description matches what BatchApi serves (its match statement's cases)."""

import ast
import inspect
import json
import textwrap

from runtime.gateway import openapi
from runtime.jobs.batch_api import ROUTES, BatchApi, _allowed, is_batch_path


def served():
    """{(METHOD, path)} of every case of BatchApi._handle's match statement."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(BatchApi._handle)))
    match = next(node for node in ast.walk(tree) if isinstance(node, ast.Match))
    routes = set()
    for case in match.cases:
        method, parts = case.pattern.patterns
        segments = [p.value.value if isinstance(p, ast.MatchValue) else "{" + p.name + "}" for p in parts.patterns]
        routes.add((method.value.value, "/v1/" + "/".join(segments)))
    return routes


def test_every_batch_route_is_described_in_the_gateways_openapi():
    doc = json.loads(openapi.document())
    described = {(m.upper(), p) for p, item in doc["paths"].items() if is_batch_path(p) for m in item}
    assert len(served()) == 9
    assert served() == described == ROUTES
    for path, item in doc["paths"].items():
        if is_batch_path(path):
            for op in item.values():
                assert op["security"] == [{"bearer": []}] and "401" in op["responses"], path


def test_the_405_table_lists_exactly_the_served_methods():
    by_shape = {}
    for method, path in served():
        parts = path.split("/")[2:]
        shape = tuple(p if not p.startswith("{") else "x" for p in parts)
        by_shape.setdefault(shape, set()).add(method)
    for shape, methods in by_shape.items():
        assert set(_allowed(list(shape)).split(", ")) == methods, shape
