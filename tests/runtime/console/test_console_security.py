"""The console over plain HTTP against a real plane: escaping, CSRF, origin, sign-out, roles."""

from __future__ import annotations

import json
import re
import shutil
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from packer import pack_dir
from runtime.plane import PlaneSettings, serve_control_plane

ADMIN = "console-security-key"
PASSWORD = "correct horse battery staple"
ECHO = Path(__file__).resolve().parents[3] / "examples" / "echo"
PAYLOADS = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
async def plane(nursery, tmp_path):
    settings = PlaneSettings(data_dir=tmp_path / "data", port=0)
    handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))
    async with httpx.AsyncClient(base_url=handle.url, timeout=20,
                                 headers={"Authorization": f"Bearer {ADMIN}"}) as admin:
        yield handle, admin


async def user(admin: httpx.AsyncClient, name: str, role: str, tenant: str | None = None) -> None:
    r = await admin.post("/api/v1/users", json={"name": name, "role": role, "password": PASSWORD,
                                                "tenant": tenant} if tenant else
                         {"name": name, "role": role, "password": PASSWORD})
    assert r.status_code == 201, r.text


@asynccontextmanager
async def signed_in(url: str, name: str):
    async with httpx.AsyncClient(base_url=url, timeout=20) as client:
        r = await client.post("/api/v1/auth/signin", json={"name": name, "password": PASSWORD})
        assert r.status_code == 200, r.text
        yield client


async def csrf_of(client: httpx.AsyncClient, path: str = "/ui/users") -> str:
    r = await client.get(path)
    found = CSRF.search(r.text)
    assert found, r.text[:500]
    return found.group(1)


def assert_text_not_markup(html: str, payload: str) -> None:
    assert payload not in html, f"{payload!r} reached the page unescaped"
    assert payload.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&#34;") in html


async def test_user_supplied_text_renders_as_text(plane, tmp_path):
    handle, admin = plane
    with trio.fail_after(60):
        src = tmp_path / "src"
        shutil.copytree(ECHO, src)
        manifest = json.loads((src / "service.json").read_text())
        manifest.update(service_id="xss", description=" ".join(PAYLOADS),
                        models=[{**manifest["models"][0], "model_id": "xss"}])
        (src / "service.json").write_text(json.dumps(manifest))
        bundle = pack_dir(src, tmp_path / "dist")
        r = await admin.put("/api/services/xss/1.0.0", content=bundle.path.read_bytes())
        assert r.status_code == 201, r.text
        assert (await admin.post("/api/gateway/tenants", json={"name": "acme"})).status_code == 201
        for payload in PAYLOADS:
            r = await admin.post("/api/gateway/keys", json={"tenant": "acme", "name": payload})
            assert r.status_code == 201, r.text
        job = {"name": "xssjob", "description": " ".join(PAYLOADS), "trigger": {"type": "manual"},
               "steps": [{"name": "s", "service": "xss@1.0.0", "command": ["true"]}]}
        r = await admin.post("/api/v1/jobs", json=job, params={"tenant": "acme"})
        assert r.status_code in (200, 201), r.text
        await user(admin, "ann", "admin")
        async with signed_in(handle.url, "ann") as ann:
            hub, tenants, job_page = [(await ann.get(p)).text for p in ("/ui/hub", "/ui/tenants",
                                                                         "/ui/jobs/acme/xssjob")]
            # A tenant name is checked before it is stored; the refusal echoes the name as text.
            token = await csrf_of(ann)
            refused = await ann.post("/ui/tenants", data={"name": PAYLOADS[1], "csrf_token": token},
                                     follow_redirects=True)
        for payload in PAYLOADS:
            assert_text_not_markup(hub, payload)
            assert_text_not_markup(tenants, payload)
            assert_text_not_markup(job_page, payload)
            assert "<script>" not in refused.text.split("</head>", 1)[1]
        assert "error:" in refused.text and "&#34;&gt;&lt;img" in refused.text


async def test_a_change_without_the_csrf_token_or_from_another_origin_is_refused(plane):
    handle, admin = plane
    with trio.fail_after(60):
        await user(admin, "ann", "admin")
        async with signed_in(handle.url, "ann") as ann:
            token = await csrf_of(ann)
            missing = await ann.post("/ui/tenants", data={"name": "one"})
            wrong = await ann.post("/ui/tenants", data={"name": "one", "csrf_token": "x" * len(token)})
            foreign = await ann.post("/ui/tenants", data={"name": "one", "csrf_token": token},
                                     headers={"Origin": "http://evil.example"})
            assert [r.status_code for r in (missing, wrong, foreign)] == [403, 403, 403]
            assert "CSRF" in missing.json()["detail"] and "cross-origin" in foreign.json()["detail"]
            assert (await admin.get("/api/gateway/tenants")).json() == []  # nothing was made
            good = await ann.post("/ui/tenants", data={"name": "one", "csrf_token": token},
                                  headers={"Origin": handle.url})
            assert good.status_code == 303 and "tenant%20one%20created" in good.headers["location"]
            assert [t["name"] for t in (await admin.get("/api/gateway/tenants")).json()] == ["one"]
            limits = await ann.post("/ui/tenants/one/limits", data={"rpm": "60", "tpm": "", "max_concurrency": "2",
                                                                   "csrf_token": token})
            assert limits.status_code == 303 and "limits%20of%20one%20set" in limits.headers["location"]
            tenant = (await admin.get("/api/gateway/tenants")).json()[0]
            assert (tenant["rpm"], tenant["tpm"], tenant["max_concurrency"]) == (60, None, 2)
            bad = await ann.post("/ui/tenants/one/limits", data={"rpm": "-1", "csrf_token": token})
            assert bad.status_code == 400 and "rpm must be between" in bad.text


async def test_a_session_cookie_from_before_sign_out_is_refused(plane):
    handle, admin = plane
    with trio.fail_after(60):
        await user(admin, "ann", "admin")
        async with signed_in(handle.url, "ann") as ann:
            cookie = ann.cookies["flowctl_session"]
            token = await csrf_of(ann)
            out = await ann.post("/ui/signout", data={"csrf_token": token})
            assert out.status_code == 303 and out.headers["location"] == "/ui/signin"
            assert "Max-Age=0" in out.headers["set-cookie"]
        async with httpx.AsyncClient(base_url=handle.url, cookies={"flowctl_session": cookie}) as stale:
            r = await stale.get("/ui/tenants")
            assert r.status_code == 303 and r.headers["location"].startswith("/ui/signin")
            r = await stale.post("/ui/tenants", data={"name": "late", "csrf_token": token})
            assert r.status_code == 303 and r.headers["location"].startswith("/ui/signin")
        assert (await admin.get("/api/gateway/tenants")).json() == []


async def test_a_viewer_sees_every_page_and_can_change_nothing(plane):
    handle, admin = plane
    with trio.fail_after(60):
        assert (await admin.post("/api/gateway/tenants", json={"name": "acme"})).status_code == 201
        key = (await admin.post("/api/gateway/keys", json={"tenant": "acme"})).json()["key_id"]
        await user(admin, "vic", "viewer")
        async with signed_in(handle.url, "vic") as vic:
            for path in ("/ui", "/ui/deployments", "/ui/hub", "/ui/tenants", "/ui/usage", "/ui/sessions",
                         "/ui/jobs", "/ui/audit"):
                r = await vic.get(path)
                assert r.status_code == 200, (path, r.text[:300])
                forms = re.findall(r'<form method="post" action="([^"]+)"', r.text)
                assert forms == ["/ui/signout"], (path, forms)  # no form to change anything
            assert (await vic.get("/ui/users")).status_code == 403
            token = await csrf_of(vic, "/ui")
            for path, data in (("/ui/tenants", {"name": "two"}), (f"/ui/keys/{key}/revoke", {}),
                               ("/ui/keys", {"tenant": "acme"}), ("/ui/deployments", {"service": "echo"}),
                               ("/ui/deployments/echo/scale", {"replicas": "2"})):
                r = await vic.post(path, data={**data, "csrf_token": token})
                assert r.status_code == 403, (path, r.status_code, r.text[:200])
            assert [k["revoked"] for k in (await admin.get("/api/gateway/keys")).json()] == [False]
            assert len((await admin.get("/api/gateway/tenants")).json()) == 1


async def test_a_tenant_admin_sees_only_its_tenant(plane):
    handle, admin = plane
    with trio.fail_after(60):
        for tenant in ("acme", "globex"):
            assert (await admin.post("/api/gateway/tenants", json={"name": tenant})).status_code == 201
            assert (await admin.post("/api/gateway/keys", json={"tenant": tenant, "name": f"{tenant}-key"})
                    ).status_code == 201
        other = [k["key_id"] for k in (await admin.get("/api/gateway/keys")).json() if k["tenant"] == "globex"][0]
        await user(admin, "tina", "tenant-admin", "acme")
        async with signed_in(handle.url, "tina") as tina:
            home = await tina.get("/ui")
            assert home.status_code == 303 and home.headers["location"] == "/ui/tenants"
            page = (await tina.get("/ui/tenants")).text
            assert "acme-key" in page and "globex" not in page
            assert (await tina.get("/ui/deployments")).status_code == 403
            assert (await tina.get("/ui/usage", params={"tenant": "globex"})).status_code == 404
            token = await csrf_of(tina, "/ui/tenants")
            r = await tina.post(f"/ui/keys/{other}/revoke", data={"csrf_token": token}, follow_redirects=True)
            assert "error:" in r.text or r.status_code == 404
            r = await tina.post("/ui/keys", data={"tenant": "globex", "csrf_token": token})
            assert r.status_code == 404
            created = await tina.post("/ui/keys", data={"tenant": "acme", "name": "mine", "csrf_token": token})
            assert created.status_code == 201 and "fgk_" in created.text
        keys = {k["name"]: k for k in (await admin.get("/api/gateway/keys")).json()}
        assert not keys["globex-key"]["revoked"] and keys["mine"]["tenant"] == "acme"


async def test_the_sign_in_form_answers_as_a_page_and_slows_brute_force(plane):
    handle, admin = plane
    with trio.fail_after(60):
        await user(admin, "ann", "admin")
        async with httpx.AsyncClient(base_url=handle.url, timeout=20) as browser:
            wrong = await browser.post("/ui/signin", data={"name": "ann", "password": "nope", "next": "/ui/jobs"})
            assert wrong.status_code == 401 and "wrong user name or password" in wrong.text
            assert 'value="/ui/jobs"' in wrong.text and "flowctl_session" not in wrong.headers.get("set-cookie", "")
            codes = [(await browser.post("/ui/signin", data={"name": "ann", "password": f"nope{i}"})).status_code
                     for i in range(6)]
            assert codes[-1] == 429, codes  # slowed after five failures
            slowed = await browser.post("/ui/signin", data={"name": "ann", "password": PASSWORD})
            assert slowed.status_code == 429 and int(slowed.headers["retry-after"]) >= 1
            assert "too many failed sign-ins" in slowed.text
            foreign = await browser.post("/ui/signin", data={"name": "bob", "password": "x"},
                                         headers={"Origin": "http://evil.example"})
            assert foreign.status_code == 403
        await user(admin, "bob", "viewer")
        async with httpx.AsyncClient(base_url=handle.url, timeout=20) as browser:
            ok = await browser.post("/ui/signin", data={"name": "bob", "password": PASSWORD, "next": "//evil.example"})
            assert ok.status_code == 303 and ok.headers["location"] == "/ui"  # never off-site
            assert "HttpOnly" in ok.headers["set-cookie"] and "SameSite=Strict" in ok.headers["set-cookie"]
            assert (await browser.get("/ui/audit")).status_code == 200
