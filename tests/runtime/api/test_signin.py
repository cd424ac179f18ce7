"""Browser sign-in on a real plane: cookie flags, fresh session ids, sign-out, CSRF, slowed brute force."""

import pytest
import trio

from runtime.api.signin import SigninThrottle
from tests.runtime.api.access_kit import AUTH, PASSWORD, cookie, make_user, signin, start_plane


@pytest.fixture
async def plane(nursery, tmp_path):
    handle, client = await start_plane(nursery, tmp_path)
    async with client:
        await make_user(client, "olga", "operator")
        await make_user(client, "vic", "viewer")
        yield client


@pytest.fixture
async def proxied(nursery, tmp_path):
    """A plane that trusts 127.0.0.1 as its TLS proxy."""
    handle, client = await start_plane(nursery, tmp_path, sessions={"trusted_proxies": ["127.0.0.1"]})
    async with client:
        await make_user(client, "olga", "operator")
        yield client


def flags(set_cookie):
    return {part.strip().split("=")[0].lower(): part.strip() for part in set_cookie.split(";")[1:]}


async def test_signin_sets_a_strict_httponly_cookie_and_me_shows_the_csrf_token(plane):
    with trio.fail_after(30):
        reply, session = await signin(plane, "olga")
        assert reply.status_code == 200, reply.text
        cookie_flags = flags(reply.headers["set-cookie"])
        assert "httponly" in cookie_flags and cookie_flags["samesite"] == "SameSite=Strict"
        assert "secure" not in cookie_flags  # plain HTTP, no trusted proxy
        assert reply.json()["role"] == "operator" and reply.json()["csrf_token"]
        me = await plane.get("/api/v1/auth/me", headers=cookie(session))
        assert me.status_code == 200 and me.json()["name"] == "olga" and me.json()["kind"] == "session"
        assert me.json()["csrf_token"] == reply.json()["csrf_token"]
        assert (await plane.get("/api/cluster/status", headers=cookie(session))).status_code == 200
        wrong, none = await signin(plane, "olga", "not the password")
        assert wrong.status_code == 401 and none is None and "wrong user name or password" in wrong.text
        unknown, _ = await signin(plane, "nobody")
        assert unknown.status_code == 401 and unknown.json() == wrong.json()


async def test_a_form_signin_redirects_only_to_a_local_path(plane):
    with trio.fail_after(30):
        for target, status in (("/ui/", 303), ("//evil.example/", 200), ("https://evil.example/", 200)):
            reply = await plane.post("/api/v1/auth/signin", data={"name": "vic", "password": PASSWORD,
                                                                   "next": target})
            plane.cookies.clear()
            assert reply.status_code == status, (target, reply.text)
            assert reply.headers["set-cookie"].startswith("flowctl_session=")
            if status == 303:
                assert reply.headers["location"] == target


async def test_the_cookie_is_secure_behind_a_trusted_tls_proxy(proxied):
    with trio.fail_after(30):
        behind, _ = await signin(proxied, "olga", headers={"X-Forwarded-Proto": "https"})
        assert "secure" in flags(behind.headers["set-cookie"])
        plain, _ = await signin(proxied, "olga")
        assert "secure" not in flags(plain.headers["set-cookie"])
        # The browser's Origin is the proxy's public one: same-origin for sign-in and for CSRF.
        public = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "plane.example", "Origin": "https://plane.example"}
        reply, session = await signin(proxied, "olga", headers=public)
        assert reply.status_code == 200, reply.text
        created = await proxied.post("/api/cluster/tokens", json={"name": "desk"}, headers={
            **public, **cookie(session), "X-CSRF-Token": reply.json()["csrf_token"]})
        assert created.status_code == 201, created.text
        cross = await proxied.post("/api/cluster/tokens", json={"name": "desk2"}, headers={
            **public, **cookie(session), "X-CSRF-Token": reply.json()["csrf_token"], "Origin": "https://evil.example"})
        assert cross.status_code == 403


async def test_forwarded_proto_from_an_untrusted_peer_is_ignored(plane):
    with trio.fail_after(30):
        reply, _ = await signin(plane, "olga", headers={"X-Forwarded-Proto": "https"})
        assert "secure" not in flags(reply.headers["set-cookie"])


async def test_each_signin_makes_a_fresh_session_and_ends_the_one_it_came_with(plane):
    with trio.fail_after(30):
        _, first = await signin(plane, "olga")
        reply, second = await signin(plane, "olga", headers=cookie(first))
        assert reply.status_code == 200 and second and second != first
        assert (await plane.get("/api/v1/auth/me", headers=cookie(first))).status_code == 401
        assert (await plane.get("/api/v1/auth/me", headers=cookie(second))).status_code == 200


async def test_signout_ends_the_session_server_side(plane):
    with trio.fail_after(30):
        reply, session = await signin(plane, "olga")
        csrf = reply.json()["csrf_token"]
        out = await plane.post("/api/v1/auth/signout", headers={**cookie(session), "X-CSRF-Token": csrf})
        assert out.status_code == 204 and "Max-Age=0" in out.headers["set-cookie"]
        # The browser may still send the old cookie: it is refused everywhere.
        assert (await plane.get("/api/v1/auth/me", headers=cookie(session))).status_code == 401
        assert (await plane.get("/api/cluster/status", headers=cookie(session))).status_code == 401
        again = await plane.post("/api/cluster/tokens", headers={**cookie(session), "X-CSRF-Token": csrf},
                                 json={"name": "late"})
        assert again.status_code == 401


async def test_a_password_change_ends_sessions_and_needs_the_current_password(plane):
    with trio.fail_after(30):
        reply, session = await signin(plane, "vic")
        headers = {**cookie(session), "X-CSRF-Token": reply.json()["csrf_token"]}
        refused = await plane.put("/api/v1/users/vic/password", headers=headers, json={"password": "a new long one"})
        assert refused.status_code == 403 and "current_password" in refused.text
        changed = await plane.put("/api/v1/users/vic/password", headers=headers,
                                  json={"password": "a new long one", "current_password": PASSWORD})
        assert changed.status_code == 204
        assert (await plane.get("/api/v1/auth/me", headers=cookie(session))).status_code == 401
        assert (await signin(plane, "vic", "a new long one"))[0].status_code == 200
        assert (await signin(plane, "vic"))[0].status_code == 401
        other = await plane.put("/api/v1/users/olga/password", headers=headers, json={"password": "x" * 12})
        assert other.status_code == 401  # the old session is gone


async def test_cookie_state_changes_need_the_csrf_token_and_the_same_origin(plane):
    with trio.fail_after(30):
        reply, session = await signin(plane, "olga")
        csrf = reply.json()["csrf_token"]
        body = {"name": "desk"}
        missing = await plane.post("/api/cluster/tokens", headers=cookie(session), json=body)
        assert missing.status_code == 403 and "CSRF" in missing.json()["detail"]
        wrong = await plane.post("/api/cluster/tokens", headers={**cookie(session), "X-CSRF-Token": "x" * 43}, json=body)
        assert wrong.status_code == 403
        other_origin = await plane.post("/api/cluster/tokens", json=body, headers={
            **cookie(session), "X-CSRF-Token": csrf, "Origin": "https://evil.example"})
        assert other_origin.status_code == 403 and "cross-origin" in other_origin.json()["detail"]
        other_referer = await plane.post("/api/cluster/tokens", json=body, headers={
            **cookie(session), "X-CSRF-Token": csrf, "Referer": "http://evil.example/page"})
        assert other_referer.status_code == 403
        listed = (await plane.get("/api/cluster/tokens", headers=AUTH)).json()
        assert listed == []  # nothing refused was done
        own = str(plane.base_url).rstrip("/")
        ok = await plane.post("/api/cluster/tokens", json=body, headers={
            **cookie(session), "X-CSRF-Token": csrf, "Origin": own})
        assert ok.status_code == 201, ok.text
        # A form post carries the token as a field.
        form = await plane.post("/api/v1/auth/signout", headers=cookie(session), data={"csrf_token": csrf})
        assert form.status_code == 204
        assert (await plane.get("/api/v1/auth/me", headers=cookie(session))).status_code == 401


async def test_a_cross_origin_signin_is_refused(plane):
    with trio.fail_after(30):
        reply, session = await signin(plane, "olga", headers={"Origin": "https://evil.example"})
        assert reply.status_code == 403 and session is None


async def test_failed_signins_are_slowed_per_user_with_retry_after(plane):
    with trio.fail_after(60):
        for _ in range(5):
            assert (await signin(plane, "vic", "wrong password"))[0].status_code == 401
        slowed, session = await signin(plane, "vic")  # even the right password waits
        assert slowed.status_code == 429 and session is None
        assert int(slowed.headers["retry-after"]) >= 1
        # Another user is not held up by vic's attacker.
        assert (await signin(plane, "olga"))[0].status_code == 200


async def test_the_throttle_doubles_the_wait_up_to_a_cap_and_forgets_on_success(autojump_clock):
    throttle = SigninThrottle(free=3, max_delay_s=8)
    for _ in range(3):
        assert throttle.retry_after("user:a") == 0
        throttle.failed("user:a")
    waits = []
    for _ in range(6):
        wait = throttle.retry_after("user:a")
        waits.append(wait)
        await trio.sleep(wait)
        assert throttle.retry_after("user:a") == 0  # never locked out: the wait always ends
        throttle.failed("user:a")
    assert waits == [1, 2, 4, 8, 8, 8]
    assert throttle.retry_after("user:b") == 0
    throttle.succeeded("user:a")
    assert throttle.retry_after("user:a") == 0


async def test_console_paths_get_the_principal_csrf_check_and_audit_from_the_gate(plane):
    """/ui routes (the console's) are behind the same gate: a cookie POST needs the CSRF token."""
    with trio.fail_after(30):
        reply, session = await signin(plane, "olga")
        csrf = reply.json()["csrf_token"]
        refused = await plane.post("/ui/deployments/echo/scale", headers=cookie(session), data={"replicas": "2"})
        assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
        passed = await plane.post("/ui/deployments/echo/scale", headers=cookie(session),
                                  data={"replicas": "2", "csrf_token": csrf})
        assert passed.status_code != 403  # let through to the console's route (or its 404)
        rows = (await plane.get("/api/v1/audit?user=olga", headers=AUTH)).json()["entries"]
        assert [(r["target"], r["status"]) for r in rows if r["target"].startswith("/ui/")] == [
            ("/ui/deployments/echo/scale", passed.status_code), ("/ui/deployments/echo/scale", 403)]


async def test_hostile_user_input_gets_a_clear_error(plane):
    with trio.fail_after(30):
        for name in ("..", "a/b", "x" * 300, "<script>"):
            reply = await plane.get(f"/api/v1/users/{name}", headers=AUTH)
            assert reply.status_code in (404, 405) and "Traceback" not in reply.text, (name, reply.text)
        huge = await plane.post("/api/v1/users", headers=AUTH, json={"name": "h", "role": "viewer",
                                                                     "password": "p" * 5000})
        assert huge.status_code == 400 and "at most" in huge.json()["detail"]
        for body in ([], {"name": 5, "password": "x"}, "text"):
            reply = await plane.post("/api/v1/auth/signin", json=body)
            assert reply.status_code == 400, (body, reply.text)
        bad = await plane.get("/api/v1/audit?since=yesterday", headers=AUTH)
        assert bad.status_code == 400 and "since" in bad.json()["detail"]
        cookieless = await plane.get("/api/v1/auth/me", headers={"Cookie": "flowctl_session=" + "x" * 5000})
        assert cookieless.status_code in (401, 431)
