import httpx
import pytest
import trio

from runtime.scheduler.resolver import hub_manifest_resolver
from runtime.scheduler.service import DeployError, UnknownService
from tests.hub_store.bundles import make_bundle
from tests.runtime.hub.conftest import AUTH, running_hub


async def test_resolves_latest_and_exact_versions_from_a_real_hub(tmp_path):
    with trio.fail_after(30):
        async with running_hub(tmp_path / "hub") as (url, _):
            async with httpx.AsyncClient(base_url=url) as client:
                for version in ("1.0.0", "1.1.0"):
                    bundle = make_bundle(tmp_path, version)
                    response = await client.put(f"/api/services/echo/{version}", headers=AUTH,
                                                content=bundle.path.read_bytes())
                    assert response.status_code in (200, 201), response.text
            resolve = hub_manifest_resolver(url)
            latest = await resolve("echo", "latest")
            assert latest.version == "1.1.0" and latest.models[0].model_id == "echo-model"
            assert (await resolve("echo", "1.0.0")).version == "1.0.0"
            with pytest.raises(UnknownService, match="no echo@9.9.9"):
                await resolve("echo", "9.9.9")
            with pytest.raises(UnknownService):
                await resolve("nope", "latest")


async def test_unreachable_hub_is_a_clear_error():
    with trio.fail_after(30), pytest.raises(DeployError, match="unreachable"):
        await hub_manifest_resolver("http://127.0.0.1:1")("echo", "latest")
