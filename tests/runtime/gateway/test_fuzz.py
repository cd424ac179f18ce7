"""schemathesis against the gateway's own OpenAPI description: no 500, every error in its family's shape.

The /v1 API is fuzzed with a tenant's key; the admin API (/api/gateway/*) with the admin key,
where every response must also match its documented status, content type and schema.
Bounded (25 examples per operation, derandomized) so it stays a few seconds of the suite.
"""

from functools import partial

import schemathesis
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import DataGenerationMethod

from tests.runtime.gateway.conftest import ADMIN

EXAMPLES_PER_OPERATION = 25
ADMIN_PREFIX = "/api/gateway/"


def _fuzz(base_url, key, document, *, admin):
    schema = schemathesis.from_dict(document, base_url=base_url)
    seen = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.startswith(ADMIN_PREFIX) != admin:
            continue
        # Bodies that break the schema too, where there is a body (the admin API must answer 400).
        methods = [DataGenerationMethod.positive]
        if admin and operation.body:
            methods.append(DataGenerationMethod.negative)

        @settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=st.one_of(*(operation.as_strategy(data_generation_method=m) for m in methods)))
        def check(case):
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {key}"}
            response = case.call(timeout=20)
            seen.append((case.method, case.operation.path, response.status_code))
            assert response.status_code < 500 or response.status_code in (502, 503, 504), response.text
            if response.status_code >= 400 and admin:  # docs/api-errors.md
                assert set(response.json()) == {"detail"} and response.json()["detail"]
            elif response.status_code >= 400:
                error = response.json()["error"]
                assert error["message"] and error["type"] and "code" in error
            assert key not in response.text
            if admin:
                case.validate_response(response)

        check()
    return seen


async def test_fuzz_the_gateway_against_its_openapi(cluster):
    key = await cluster.key()
    document = (await cluster.client.get("/v1/openapi.json")).json()
    with trio.fail_after(240):
        seen = [s for _, _, s in await trio.to_thread.run_sync(partial(_fuzz, cluster.url, key, document,
                                                                       admin=False))]
    assert 200 in seen and any(400 <= s < 500 for s in seen)
    assert 500 not in seen


async def test_fuzz_the_admin_api_against_its_openapi(cluster):
    document = (await cluster.client.get("/v1/openapi.json")).json()
    with trio.fail_after(240):
        seen = await trio.to_thread.run_sync(partial(_fuzz, cluster.url, ADMIN, document, admin=True))
    statuses = {(method, path): set() for method, path, _ in seen}
    for method, path, status in seen:
        statuses[method, path].add(status)
    assert len(statuses) == sum(len(ops) for path, ops in document["paths"].items() if path.startswith(ADMIN_PREFIX))
    # Every operation was reached; those that need no existing object succeeded; bad bodies got 400.
    assert all(statuses.values()) and statuses["GET", "/api/gateway/usage"] == {200}, statuses
    assert statuses["POST", "/api/gateway/tenants"] >= {201, 400, 409}, statuses
    assert 400 in statuses["POST", "/api/gateway/keys"] and 204 in statuses["DELETE", "/api/gateway/tenants/{name}"]
