"""The console's jobs forms over HTTP against a real plane: trigger with parameters, suspend, cancel."""

from __future__ import annotations

import re
from functools import partial
from urllib.parse import unquote

import httpx
import pytest
import trio

from runtime.plane import PlaneSettings, serve_control_plane

ADMIN = "console-forms-key"
PASSWORD = "correct horse battery staple"
JOB = {"name": "greet", "description": "says hello", "trigger": {"type": "manual"},
       "parameters": {"times": {"type": "int", "default": 1}, "loud": {"type": "bool", "default": False}},
       "steps": [{"name": "a", "service": "echo@1.0.0", "command": ["true"]},
                 {"name": "b", "service": "echo@1.0.0", "command": ["true"], "needs": ["a"]}]}


@pytest.fixture
async def signed_in(nursery, tmp_path):
    handle = await nursery.start(partial(serve_control_plane, PlaneSettings(data_dir=tmp_path / "d", port=0),
                                         admin_key=ADMIN))
    async with httpx.AsyncClient(base_url=handle.url, timeout=20, headers={"Authorization": f"Bearer {ADMIN}"}) as admin, \
            httpx.AsyncClient(base_url=handle.url, timeout=20) as browser:
        assert (await admin.post("/api/gateway/tenants", json={"name": "acme"})).status_code == 201
        assert (await admin.post("/api/v1/jobs", json=JOB, params={"tenant": "acme"})).status_code == 201
        r = await admin.post("/api/v1/users", json={"name": "op", "role": "operator", "password": PASSWORD})
        assert r.status_code == 201, r.text
        assert (await browser.post("/ui/signin", data={"name": "op", "password": PASSWORD})).status_code == 303
        token = re.search(r'name="csrf_token" value="([^"]+)"', (await browser.get("/ui/jobs/acme/greet")).text)
        assert token is not None
        yield admin, browser, token.group(1)


async def test_trigger_with_parameters_then_cancel_and_suspend(signed_in):
    admin, browser, token = signed_in
    with trio.fail_after(30):
        bad = await browser.post("/ui/jobs/acme/greet/trigger", data={"param.times": "many", "csrf_token": token})
        assert bad.status_code == 400 and "parameter times" in bad.text
        r = await browser.post("/ui/jobs/acme/greet/trigger",
                               data={"param.times": "3", "param.loud": "true", "csrf_token": token})
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/runs/run_")
        run_id = r.headers["location"].rsplit("/", 1)[1]
        page = (await browser.get(f"/ui/runs/{run_id}")).text
        assert '{"loud": true, "times": 3}' in page.replace("&#34;", '"') and "<svg" in page
        assert page.count('class="edge"') == 1  # b needs a: one arrow in the step graph
        r = await browser.post(f"/ui/runs/{run_id}/cancel", data={"csrf_token": token})
        assert r.status_code == 303 and "cancelled" in unquote(r.headers["location"])
        assert (await admin.get(f"/api/v1/runs/{run_id}")).json()["state"] == "cancelled"  # waited for

        r = await browser.post("/ui/jobs/acme/greet/suspend", data={"csrf_token": token})
        assert r.status_code == 303 and "suspended" in unquote(r.headers["location"])
        assert (await admin.get("/api/v1/jobs/greet", params={"tenant": "acme"})).json()["suspended"] is True
        assert ">suspended<" in (await browser.get("/ui/jobs/acme/greet")).text
        r = await browser.post("/ui/jobs/acme/greet/resume", data={"csrf_token": token})
        assert (await admin.get("/api/v1/jobs/greet", params={"tenant": "acme"})).json()["suspended"] is False
        audit = (await browser.get("/ui/audit")).text
        assert "/ui/jobs/acme/greet/suspend" in audit and "/ui/runs/" in audit


async def test_a_plane_without_the_role_answers_its_pages_and_forms_with_404(nursery, tmp_path):
    settings = PlaneSettings(data_dir=tmp_path / "hub-only", port=0, roles=("hub",))
    handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=handle.url, timeout=20) as browser:
            r = await browser.post("/api/v1/users", json={"name": "ann", "role": "admin", "password": PASSWORD},
                                   headers={"Authorization": f"Bearer {ADMIN}"})
            assert r.status_code == 201
            assert (await browser.post("/ui/signin", data={"name": "ann", "password": PASSWORD})).status_code == 303
            token = re.search(r'name="csrf_token" value="([^"]+)"', (await browser.get("/ui/hub")).text).group(1)
            for path, data in (("/ui/deployments", {"service": "echo"}), ("/ui/deployments/echo/scale",
                                                                           {"replicas": "2"}),
                               ("/ui/tenants", {"name": "acme"}), ("/ui/keys", {"tenant": "acme"}),
                               ("/ui/sessions/x/close", {})):
                r = await browser.post(path, data={**data, "csrf_token": token})
                assert r.status_code == 404 and "role does not run in this plane process" in r.text, path
            assert (await browser.get("/ui/tenants")).status_code == 404
            home = await browser.get("/ui")
            assert home.status_code == 200
            nav = home.text.split('<nav aria-label="Console">', 1)[1].split("</nav>", 1)[0]
            assert "Hub" in nav and "Users" in nav and "Tenants" not in nav and "Jobs" not in nav  # roles not here
