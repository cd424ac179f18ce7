"""Each role against each class of admin API on a real plane, with personal access tokens.

Allowed, 403 naming role and action, 404 for another tenant's objects; the admin key is
the built-in admin; a revoked or expired token is refused.
"""

import time

import pytest
import trio

from runtime.api.users import UserStore
from tests.runtime.api.access_kit import AUTH, ROLE_USERS, make_token, make_user, start_plane

JOB = {"trigger": {"type": "manual"}, "steps": [{"name": "main", "service": "echo@stable", "command": ["true"]}]}
# (method, path, body, {role: status}); "*" is every role not named.
MATRIX = [
    ("GET", "/api/cluster/status", None, {"tenant-admin": 403, "tenant-viewer": 403, "*": 200}),
    ("POST", "/api/cluster/tokens", {"name": "t-{role}"}, {"admin": 201, "operator": 201, "*": 403}),
    ("PATCH", "/api/deployments/nothing", {"replicas": 1}, {"admin": 404, "operator": 404, "*": 403}),
    ("POST", "/api/admin/gc?dry_run=true", None, {"admin": 200, "operator": 200, "*": 403}),
    ("PUT", "/api/services/echo/1.0.0", None, {"admin": 400, "operator": 400, "*": 403}),
    ("GET", "/api/gateway/tenants", None, {"*": 200}),
    ("POST", "/api/gateway/tenants", {"name": "new-{role}"}, {"admin": 201, "*": 403}),
    ("PATCH", "/api/gateway/tenants/acme", {"rpm": 5}, {"admin": 200, "*": 403}),
    ("GET", "/api/gateway/keys", None, {"*": 200}),
    ("GET", "/api/gateway/keys?tenant=other", None, {"tenant-admin": 404, "tenant-viewer": 404, "*": 200}),
    ("POST", "/api/gateway/keys", {"tenant": "acme"}, {"admin": 201, "tenant-admin": 201, "*": 403}),
    ("POST", "/api/gateway/keys", {"tenant": "other"}, {"admin": 201, "tenant-admin": 404, "*": 403}),
    ("GET", "/api/gateway/usage", None, {"*": 200}),
    ("GET", "/api/gateway/usage?tenant=other", None, {"tenant-admin": 404, "tenant-viewer": 404, "*": 200}),
    ("GET", "/v1/sessions", None, {"*": 200}),
    ("DELETE", "/v1/sessions/nope", None, {"admin": 404, "tenant-admin": 404, "*": 403}),
    ("GET", "/api/v1/users", None, {"admin": 200, "*": 403}),
    ("POST", "/api/v1/users", {"name": "n-{role}", "role": "viewer", "password": "long enough pw"},
     {"admin": 201, "*": 403}),
    ("GET", "/api/v1/audit", None, {"*": 200}),
    ("GET", "/api/v1/jobs", None, {"*": 200}),
    ("GET", "/api/v1/runs", None, {"*": 200}),
    ("PUT", "/api/v1/jobs/j-{role}", JOB, {"admin": 201, "operator": 201, "tenant-admin": 201, "*": 403}),
    ("POST", "/api/v1/jobs/nothing/trigger", None, {"admin": 404, "operator": 404, "tenant-admin": 404, "*": 403}),
    ("GET", "/api/v1/jobs/secret?tenant=other", None, {"tenant-admin": 404, "tenant-viewer": 404, "*": 200}),
    ("DELETE", "/api/v1/jobs/secret?tenant=other", None, {"admin": 200, "operator": 200, "tenant-admin": 404,
                                                          "*": 403}),
    ("GET", "/api/v1/auth/me", None, {"*": 200}),
]


@pytest.fixture
async def plane(nursery, tmp_path):
    handle, client = await start_plane(nursery, tmp_path)
    async with client:
        for tenant in ("acme", "other"):
            assert (await client.post("/api/gateway/tenants", headers=AUTH, json={"name": tenant})).status_code == 201
        other_key = (await client.post("/api/gateway/keys", headers=AUTH, json={"tenant": "other"})).json()
        acme_key = (await client.post("/api/gateway/keys", headers=AUTH, json={"tenant": "acme"})).json()
        client.tokens = {}
        for role, (name, tenant) in ROLE_USERS.items():
            await make_user(client, name, role, tenant)
            client.tokens[role] = await make_token(client, name)
        client.keys = {"other": other_key, "acme": acme_key}
        secret = await client.put("/api/v1/jobs/secret?tenant=other", headers=AUTH, json=JOB)
        assert secret.status_code == 201, secret.text
        client.handle = handle
        yield client


@pytest.mark.parametrize("role", list(ROLE_USERS))
async def test_each_role_against_each_admin_api(plane, role):
    headers = {"Authorization": f"Bearer {plane.tokens[role]}"}
    with trio.fail_after(60):
        for method, path, body, expected in MATRIX:
            want = expected.get(role, expected.get("*"))
            json_body = {k: v.format(role=role) if isinstance(v, str) else v for k, v in body.items()} \
                if body is not None else None
            reply = await plane.request(method, path.format(role=role), headers=headers, json=json_body)
            assert reply.status_code == want, (role, method, path, reply.text)
            if want == 403:
                detail = reply.json()["detail"]
                assert f"role {role} may not" in detail and "\n" not in detail, detail
        tenants = (await plane.get("/api/gateway/tenants", headers=headers)).json()
        keys = (await plane.get("/api/gateway/keys", headers=headers)).json()
        if role.startswith("tenant-"):
            assert [t["name"] for t in tenants] == ["acme"]
            assert {k["tenant"] for k in keys} == {"acme"}
        else:
            assert {"acme", "other"} <= {t["name"] for t in tenants}
            assert {"acme", "other"} <= {k["tenant"] for k in keys}


async def test_a_tenant_admin_revokes_its_keys_not_another_tenants(plane):
    headers = {"Authorization": f"Bearer {plane.tokens['tenant-admin']}"}
    with trio.fail_after(30):
        other = plane.keys["other"]["key_id"]
        refused = await plane.delete(f"/api/gateway/keys/{other}", headers=headers)
        assert refused.status_code == 404 and "other" not in refused.text.replace(other, "")
        still = (await plane.get("/api/gateway/keys?tenant=other", headers=AUTH)).json()
        assert [k["revoked"] for k in still if k["key_id"] == other] == [False]
        own = plane.keys["acme"]["key_id"]
        assert (await plane.delete(f"/api/gateway/keys/{own}", headers=headers)).status_code == 204
        viewer = {"Authorization": f"Bearer {plane.tokens['tenant-viewer']}"}
        assert (await plane.delete(f"/api/gateway/keys/{own}", headers=viewer)).status_code == 403


async def test_the_admin_key_is_the_builtin_admin(plane):
    with trio.fail_after(30):
        me = (await plane.get("/api/v1/auth/me", headers=AUTH)).json()
        assert me == {"name": "admin", "role": "admin", "tenant": None, "kind": "admin-key"}
        assert (await plane.get("/api/v1/users", headers=AUTH)).status_code == 200
        assert (await plane.get("/api/v1/users")).status_code == 401
        assert (await plane.get("/api/cluster/status")).status_code == 401


async def test_a_token_works_until_revoked_and_is_shown_once(plane):
    with trio.fail_after(30):
        created = (await plane.post("/api/v1/users/olga/tokens", headers=AUTH, json={"name": "ci"})).json()
        token = created["token"]
        assert token.startswith("fcp_") and created["name"] == "ci"
        headers = {"Authorization": f"Bearer {token}"}
        assert (await plane.get("/api/cluster/status", headers=headers)).status_code == 200
        listed = (await plane.get("/api/v1/users/olga/tokens", headers=headers)).json()  # its own: allowed
        assert token not in str(listed) and {t["token_id"] for t in listed} >= {created["token_id"]}
        # A user manages its own tokens; not another user's.
        assert (await plane.get("/api/v1/users/vic/tokens", headers=headers)).status_code == 403
        revoked = await plane.delete(f"/api/v1/users/olga/tokens/{created['token_id']}", headers=headers)
        assert revoked.status_code == 204
        refused = await plane.get("/api/cluster/status", headers=headers)
        assert refused.status_code == 401 and "personal access token" in refused.json()["detail"]
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        assert (await plane.get("/api/cluster/status", headers={"Authorization": f"Bearer {forged}"})).status_code == 401


async def test_a_removed_user_and_a_changed_role_take_effect_at_once(plane):
    with trio.fail_after(30):
        token = await make_token(plane, "vic")
        headers = {"Authorization": f"Bearer {token}"}
        assert (await plane.post("/api/cluster/tokens", headers=headers, json={"name": "x"})).status_code == 403
        changed = await plane.patch("/api/v1/users/vic", headers=AUTH, json={"role": "operator"})
        assert changed.status_code == 200 and changed.json()["role"] == "operator"
        assert (await plane.post("/api/cluster/tokens", headers=headers, json={"name": "x"})).status_code == 201
        assert (await plane.delete("/api/v1/users/vic", headers=AUTH)).status_code == 204
        assert (await plane.get("/api/cluster/status", headers=headers)).status_code == 401


async def test_bad_user_input_is_a_clear_400(plane):
    with trio.fail_after(30):
        cases = [({"name": "x1", "role": "king", "password": "long enough pw"}, "role 'king'"),
                 ({"name": "x2", "role": "tenant-admin", "password": "long enough pw"}, "needs a tenant"),
                 ({"name": "x3", "role": "viewer", "tenant": "acme", "password": "long enough pw"}, "every tenant"),
                 ({"name": "x4", "role": "viewer", "password": "short"}, "at least 10"),
                 ({"name": "Bad Name", "role": "viewer", "password": "long enough pw"}, "user name"),
                 ({"name": "x5", "role": "viewer"}, "'password'")]
        for body, words in cases:
            reply = await plane.post("/api/v1/users", headers=AUTH, json=body)
            assert reply.status_code == 400 and words in reply.json()["detail"], (body, reply.text)
        taken = await plane.post("/api/v1/users", headers=AUTH, json={"name": "olga", "role": "viewer",
                                                                         "password": "long enough pw"})
        assert taken.status_code == 409
        past = await plane.post("/api/v1/users/olga/tokens", headers=AUTH, json={"expires_at": 1})
        assert past.status_code == 400 and "past" in past.text
        assert (await plane.post("/api/v1/users", headers=AUTH, content=b"{")).status_code == 400


def test_an_expired_token_is_refused(tmp_path, monkeypatch):
    store = UserStore(tmp_path / "users.db")
    try:
        store.create_user("eve", "viewer", "long enough pw")
        token, record = store.create_token("eve", "short-lived", expires_at=time.time() + 60)
        assert store.token_principal(token).name == "eve"
        later = time.time() + 61
        monkeypatch.setattr("runtime.api.users.time.time", lambda: later)
        assert store.token_principal(token) is None
    finally:
        store.close()
