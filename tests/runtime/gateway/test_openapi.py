"""The gateway's OpenAPI description matches what it serves: every route, its methods and its answers.

The admin API is a `match` over (method, path parts) in runtime/gateway/service.py, not a
framework's route table, so its routes are read from that statement's cases.
"""

import ast
import inspect
import json
import textwrap
from functools import partial

import schemathesis
import trio
from schemathesis.constants import NOT_SET

from runtime.gateway import app as gateway_app
from runtime.gateway import openapi
from runtime.gateway.service import ADMIN_METHODS, KeyService
from runtime.gateway.validate import ENDPOINTS
from runtime.jobs.batch_api import is_batch_path
from tests.runtime.gateway.conftest import ADMIN

ADMIN_PREFIX = "/api/gateway"


def described():
    """{(METHOD, path)} of the served description."""
    doc = json.loads(openapi.document())
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item}


def admin_routes():
    """{(METHOD, path)} of every case of KeyService._admin's match statement."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(KeyService._admin)))
    match = next(node for node in ast.walk(tree) if isinstance(node, ast.Match))
    routes = set()
    for case in match.cases:
        method, parts = case.pattern.patterns
        segments = [p.value.value if isinstance(p, ast.MatchValue) else "{" + p.name + "}"
                    for p in parts.patterns]
        routes.add((method.value.value, "/".join([ADMIN_PREFIX, *segments])))
    return routes


def test_every_admin_route_is_described_with_its_methods():
    routes = admin_routes()
    assert len(routes) == 8  # the parse found the cases (tenants, keys, usage)
    admin_described = {(m, p) for m, p in described() if p.startswith(ADMIN_PREFIX + "/")}
    assert routes == admin_described


def test_the_405_table_lists_exactly_the_served_methods():
    served = {}
    for method, path in admin_routes():
        parts = path.removeprefix(ADMIN_PREFIX + "/").split("/")
        served.setdefault((parts[0], len(parts)), set()).add(method)
    assert {shape: set(methods.split(", ")) for shape, methods in ADMIN_METHODS.items()} == served


def test_every_v1_route_is_described_with_its_method():
    served = {("POST" if path in ENDPOINTS else "GET", path) for path in gateway_app.PATHS}
    # The Files and Batches API (runtime/jobs/batch_api.py) has its own check in tests/runtime/jobs/.
    assert served == {(m, p) for m, p in described() if not p.startswith(ADMIN_PREFIX + "/") and not is_batch_path(p)}


def test_admin_operations_need_the_admin_key_and_v1_ones_an_api_key():
    doc = json.loads(openapi.document())
    for path, item in doc["paths"].items():
        for op in item.values():
            expected = [{"adminKey": []}] if path.startswith(ADMIN_PREFIX) else [{"bearer": []}]
            if path == "/metrics":
                expected = [{"adminKey": []}, {"metricsToken": []}]
            if path != "/v1/openapi.json":
                assert op["security"] == expected, path
                assert "401" in op["responses"], path


def _call_and_validate(case):
    response = case.call(timeout=20)
    case.validate_response(response)
    return response


async def test_a_real_walk_through_the_admin_api_answers_as_documented(cluster):
    """Every admin operation with real values (a tenant, its key, a revoke): status, headers and body match."""
    document = (await cluster.client.get("/v1/openapi.json")).json()
    schema = schemathesis.from_dict(document, base_url=cluster.url)
    auth = {"Authorization": f"Bearer {ADMIN}"}
    steps = [("POST", "/api/gateway/tenants", {}, {"name": "walk", "rpm": 60}, 201),
             ("POST", "/api/gateway/tenants", {}, {"name": "walk"}, 409),
             ("POST", "/api/gateway/keys", {}, {"tenant": "walk", "name": "k", "models": ["echo"],
                                                "expires_at": 4102444800, "tpm": 1000}, 201),
             ("POST", "/api/gateway/keys", {}, {"tenant": "nobody"}, 404),
             ("POST", "/api/gateway/keys", {}, {"tenant": "walk", "rpm": 0}, 400),
             ("PATCH", "/api/gateway/tenants/{name}", {}, {"max_sessions": 2, "rpm": None}, 200),
             ("PATCH", "/api/gateway/tenants/{name}", {}, {"max_sessions": -1}, 400),
             ("PATCH", "/api/gateway/tenants/{name}", {}, {"burst": 3}, 400),
             ("GET", "/api/gateway/tenants", {}, None, 200),
             ("GET", "/api/gateway/keys", {"tenant": "walk"}, None, 200),
             ("GET", "/api/gateway/usage", {}, None, 200),
             ("DELETE", "/api/gateway/keys/{key_id}", {}, None, 204),
             ("DELETE", "/api/gateway/keys/{key_id}", {}, None, 204),  # idempotent
             ("DELETE", "/api/gateway/tenants/{name}", {}, None, 204),
             ("DELETE", "/api/gateway/tenants/{name}", {}, None, 404)]
    values = {"name": "walk"}
    for method, path, query, body, status in steps:
        operation = schema[path][method]
        case = operation.make_case(path_parameters={k: values[k] for k in values if "{" + k + "}" in path},
                                   query=query or None, body=body if body is not None else NOT_SET,
                                   headers=auth, media_type="application/json" if body is not None else None)
        with trio.fail_after(30):  # validate_response sends requests too (without the key: a 401 expected)
            response = await trio.to_thread.run_sync(partial(_call_and_validate, case))
        assert response.status_code == status, (method, path, response.text)
        if path == "/api/gateway/keys" and status == 201:  # one request, so usage has a row to check
            values["key_id"] = response.json()["key_id"]
            chat = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
            r = await cluster.client.post("/v1/chat/completions", json=chat,
                                          headers={"Authorization": f"Bearer {response.json()['key']}"})
            assert r.status_code == 200, r.text
        if path == "/api/gateway/usage":
            assert [row["requests"] for row in response.json()] == [1]
