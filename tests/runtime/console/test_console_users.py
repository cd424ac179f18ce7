"""The users page's forms over HTTP against a real plane: an admin changes a user's role and resets
a password (CSRF-checked, audited, through the users store); others may not."""

from __future__ import annotations

import re
from contextlib import aclosing
from functools import partial
from urllib.parse import unquote

import httpx
import pytest
import trio

from runtime.plane import PlaneSettings, serve_control_plane

ADMIN = "console-users-key"
PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a whole new secret phrase"


async def sign_in(url: str, name: str, password: str = PASSWORD) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=url, timeout=20)
    r = await client.post("/ui/signin", data={"name": name, "password": password})
    assert r.status_code == 303 and r.headers["location"] != "/ui/signin", r.text
    return client


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def notice(r: httpx.Response) -> str:
    assert r.status_code == 303, r.text
    return unquote(r.headers["location"].split("notice=", 1)[1])


@pytest.fixture
async def plane(nursery, tmp_path):
    handle = await nursery.start(partial(serve_control_plane, PlaneSettings(data_dir=tmp_path / "d", port=0),
                                         admin_key=ADMIN))
    async with httpx.AsyncClient(base_url=handle.url, timeout=20, headers={"Authorization": f"Bearer {ADMIN}"}) as admin:
        for name, role in (("ann", "admin"), ("bob", "operator"), ("olga", "operator")):
            r = await admin.post("/api/v1/users", json={"name": name, "role": role, "password": PASSWORD})
            assert r.status_code == 201, r.text
        yield handle.url, admin


async def test_an_admin_changes_a_role_from_the_users_page(plane):
    url, admin = plane
    with trio.fail_after(60):
        ann, bob = await sign_in(url, "ann"), await sign_in(url, "bob")
        async with aclosing(ann), aclosing(bob):
            page = (await ann.get("/ui/users")).text
            assert 'action="/ui/users/bob/role"' in page and 'action="/ui/users/bob/password"' in page
            token = csrf(page)
            r = await ann.post("/ui/users/bob/role", data={"role": "tenant-viewer", "tenant": "acme", "csrf_token": token})
            assert notice(r) == "user bob is now tenant-viewer of acme"
            users = {u["name"]: u for u in (await admin.get("/api/v1/users")).json()}
            assert users["bob"]["role"] == "tenant-viewer" and users["bob"]["tenant"] == "acme"
            assert (await bob.get("/ui/users")).status_code == 303  # its session ended: back to sign-in
            assert ">tenant-viewer<" in (await ann.get("/ui/users")).text

            for data, says in (({"role": "root"}, "role 'root' is not one of"),
                               ({"role": "tenant-admin"}, "role tenant-admin needs a tenant"),
                               ({"role": "viewer", "tenant": "acme"}, "role viewer sees every tenant")):
                assert says in notice(await ann.post("/ui/users/bob/role", data={**data, "csrf_token": token}))
            assert "no user 'nobody'" in notice(await ann.post("/ui/users/nobody/role",
                                                               data={"role": "viewer", "csrf_token": token}))
            users = {u["name"]: u for u in (await admin.get("/api/v1/users")).json()}
            assert users["bob"]["role"] == "tenant-viewer"  # nothing half-changed by the refusals
            audit = (await ann.get("/ui/audit")).text
            assert "/ui/users/bob/role" in audit


async def test_an_admin_resets_a_password_from_the_users_page(plane):
    url, admin = plane
    with trio.fail_after(60):
        ann, olga = await sign_in(url, "ann"), await sign_in(url, "olga")
        async with aclosing(ann), aclosing(olga):
            token = csrf((await ann.get("/ui/users")).text)
            r = await ann.post("/ui/users/olga/password", data={"password": "short", "csrf_token": token})
            assert notice(r).startswith("error: a password needs at least")
            assert (await olga.get("/ui")).status_code == 200  # a refused reset changes nothing
            r = await ann.post("/ui/users/olga/password", data={"password": NEW_PASSWORD, "csrf_token": token})
            assert notice(r) == "password of olga reset; its browser sessions ended"
            assert (await olga.get("/ui")).status_code == 303
            r = await admin.post("/api/v1/auth/signin", json={"name": "olga", "password": PASSWORD})
            assert r.status_code == 401
            async with aclosing(await sign_in(url, "olga", NEW_PASSWORD)):
                pass
            audit = (await ann.get("/ui/audit")).text
            assert "/ui/users/olga/password" in audit and NEW_PASSWORD not in audit


async def test_only_an_admin_with_the_csrf_token_changes_users(plane):
    url, admin = plane
    with trio.fail_after(60):
        ann, olga = await sign_in(url, "ann"), await sign_in(url, "olga")
        async with aclosing(ann), aclosing(olga):
            operator_page = await olga.get("/ui/users")
            assert operator_page.status_code == 403 and "/ui/users/bob/role" not in operator_page.text
            token = csrf((await olga.get("/ui")).text)
            r = await olga.post("/ui/users/bob/role", data={"role": "admin", "csrf_token": token})
            assert r.status_code == 403
            r = await olga.post("/ui/users/bob/password", data={"password": NEW_PASSWORD, "csrf_token": token})
            assert r.status_code == 403
            for path, data in (("/ui/users/bob/role", {"role": "admin"}),
                               ("/ui/users/bob/password", {"password": NEW_PASSWORD})):
                assert (await ann.post(path, data=data)).status_code == 403  # no CSRF token
                r = await ann.post(path, data={**data, "csrf_token": csrf((await ann.get("/ui/users")).text)},
                                   headers={"Origin": "https://evil.example"})
                assert r.status_code == 403
            users = {u["name"]: u for u in (await admin.get("/api/v1/users")).json()}
            assert users["bob"]["role"] == "operator"
            async with aclosing(await sign_in(url, "bob")):
                pass  # its password unchanged
