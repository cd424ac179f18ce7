"""Two planes' key services on one PostgreSQL: a key revoked through one is refused by the other
within the shared-state cache TTL (runtime.gateway.service.SHARED_CACHE_TTL)."""

import pytest
import trio

from hub_store import sql
from runtime.gateway.errors import GatewayError
from runtime.gateway.service import SHARED_CACHE_TTL, KeyService

pytestmark = pytest.mark.engines


async def test_a_key_revoked_on_one_plane_is_refused_on_the_other_within_the_ttl(postgres_url):
    states = [sql.State.parse(postgres_url) for _ in "ab"]
    a, b = (KeyService.open(s, "admin-hash") for s in states)
    try:
        assert a.cache_ttl == b.cache_ttl == SHARED_CACHE_TTL <= 2.0
        a.store.create_tenant("acme")
        key, record = a.store.create_key("acme")
        header = f"Bearer {key}"
        assert (await b.authenticate(header)).tenant == "acme"  # now cached on plane b
        a.store.revoke(record.key_id)
        with trio.fail_after(SHARED_CACHE_TTL + 3):
            while True:
                try:
                    await b.authenticate(header)
                except GatewayError as exc:
                    assert exc.status == 401
                    break
                await trio.sleep(0.05)
    finally:
        for service, state in ((a, states[0]), (b, states[1])):
            service.store.close()
            state.close()
