"""schemathesis against the gateway's own OpenAPI description: no 500, every error in OpenAI's shape.

Bounded (25 examples per operation, derandomized) so it stays a few seconds of the suite.
"""

from functools import partial

import schemathesis
import trio
from hypothesis import HealthCheck, given, settings

EXAMPLES_PER_OPERATION = 25


def _fuzz(base_url, key, document):
    schema = schemathesis.from_dict(document, base_url=base_url)
    seen = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case):
            response = case.call(headers={"Authorization": f"Bearer {key}"}, timeout=20)
            seen.append(response.status_code)
            assert response.status_code < 500 or response.status_code in (502, 503, 504), response.text
            if response.status_code >= 400:
                error = response.json()["error"]
                assert error["message"] and error["type"] and "code" in error
            assert key not in response.text

        check()
    return seen


async def test_fuzz_the_gateway_against_its_openapi(cluster):
    key = await cluster.key()
    document = (await cluster.client.get("/v1/openapi.json")).json()
    with trio.fail_after(240):
        seen = await trio.to_thread.run_sync(partial(_fuzz, cluster.url, key, document))
    assert 200 in seen and any(400 <= s < 500 for s in seen)
    assert 500 not in seen
