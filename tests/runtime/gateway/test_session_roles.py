"""Realtime sessions seen by users' roles: viewers list every tenant's, a tenant-admin only its own and
closes only its own (another tenant's is 404), admins close any."""

import trio

from tests.runtime.gateway.conftest import ADMIN_AUTH


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


async def _token(client, name, role, tenant=None):
    body = {"name": name, "role": role, "password": "long enough pw", **({"tenant": tenant} if tenant else {})}
    assert (await client.post("/api/v1/users", headers=ADMIN_AUTH, json=body)).status_code == 201
    reply = await client.post(f"/api/v1/users/{name}/tokens", headers=ADMIN_AUTH, json={})
    return reply.json()["token"]


async def test_roles_list_and_close_sessions_within_their_tenant(cluster):
    await cluster.deploy()
    client = cluster.client
    with trio.fail_after(60):
        acme, other = await cluster.key("acme"), await cluster.key("other")
        mine = (await client.post("/v1/sessions", headers=bearer(acme), json={"model": "echo"})).json()["session_id"]
        theirs = (await client.post("/v1/sessions", headers=bearer(other), json={"model": "echo"})).json()["session_id"]
        viewer = bearer(await _token(client, "vic", "viewer"))
        tara = bearer(await _token(client, "tara", "tenant-admin", "acme"))
        admin = bearer(await _token(client, "root", "admin"))

        listed = (await client.get("/v1/sessions", headers=viewer)).json()["data"]
        assert {(s["session_id"], s["tenant"]) for s in listed} == {(mine, "acme"), (theirs, "other")}
        assert (await client.get(f"/v1/sessions/{theirs}", headers=viewer)).status_code == 200
        refused = await client.delete(f"/v1/sessions/{mine}", headers=viewer)
        assert refused.status_code == 403 and "role viewer may not sessions.write" in refused.text

        assert [s["session_id"] for s in (await client.get("/v1/sessions", headers=tara)).json()["data"]] == [mine]
        assert (await client.get(f"/v1/sessions/{theirs}", headers=tara)).status_code == 404
        assert (await client.delete(f"/v1/sessions/{theirs}", headers=tara)).status_code == 404
        assert (await client.delete(f"/v1/sessions/{mine}", headers=tara)).status_code == 204
        assert (await client.delete(f"/v1/sessions/{theirs}", headers=admin)).status_code == 204
        assert (await client.get("/v1/sessions", headers=ADMIN_AUTH)).json()["data"] == []
