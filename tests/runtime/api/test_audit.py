"""The audit log on a real plane: a row per state change (refused ones too) with who, what, where, result;
tenant roles see their tenant's rows; no password, token or key ever reaches it or the logs."""

import logging
import time

import pytest
import trio

from runtime.api.passwords import hash_password, verify_password
from tests.runtime.api.access_kit import (
    ADMIN,
    AUTH,
    PASSWORD,
    cookie,
    make_token,
    make_user,
    signin,
    start_plane,
)


@pytest.fixture
async def plane(nursery, tmp_path):
    handle, client = await start_plane(nursery, tmp_path)
    async with client:
        client.data_dir = tmp_path / "plane"
        yield client


async def test_state_changes_are_audited_with_principal_action_address_and_result(plane, caplog):
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(60):
        started = time.time()
        assert (await plane.post("/api/gateway/tenants", headers=AUTH, json={"name": "acme"})).status_code == 201
        await make_user(plane, "olga", "operator")
        await make_user(plane, "tara", "tenant-admin", "acme")
        olga = await make_token(plane, "olga")
        tara = await make_token(plane, "tara")
        assert (await plane.post("/api/cluster/tokens", headers={"Authorization": f"Bearer {olga}"},
                                 json={"name": "desk"})).status_code == 201
        created = await plane.post("/api/gateway/keys", headers={"Authorization": f"Bearer {tara}"},
                                   json={"tenant": "acme", "name": "app"})
        assert created.status_code == 201
        api_key = created.json()["key"]
        refused = await plane.post("/api/gateway/tenants", headers={"Authorization": f"Bearer {tara}"},
                                   json={"name": "mine"})
        assert refused.status_code == 403
        assert (await plane.post("/api/cluster/tokens", json={"name": "x"})).status_code == 401
        reply, session = await signin(plane, "olga")
        failed, _ = await signin(plane, "olga", "a wrong password")
        assert failed.status_code == 401
        assert (await plane.get("/api/cluster/status", headers={"Authorization": f"Bearer {olga}"})).status_code == 200

        entries = (await plane.get(f"/api/v1/audit?since={started - 1}", headers=AUTH)).json()["entries"]
        rows = [(e["principal"], e["method"], e["target"], e["action"], e["status"]) for e in reversed(entries)]
        assert ("admin", "POST", "/api/gateway/tenants", "tenants.write", 201) in rows
        assert ("olga", "POST", "/api/cluster/tokens", "cluster.write", 201) in rows
        assert ("tara", "POST", "/api/gateway/keys", "keys.write", 201) in rows
        assert ("tara", "POST", "/api/gateway/tenants", "tenants.write", 403) in rows
        assert ("anonymous", "POST", "/api/cluster/tokens", "cluster.write", 401) in rows
        assert ("olga", "POST", "/api/v1/auth/signin", None, 200) in rows
        assert ("olga", "POST", "/api/v1/auth/signin", None, 401) in rows
        assert not any(method == "GET" for _, method, *_ in rows)  # reads change nothing
        assert {e["remote"] for e in entries} == {"127.0.0.1"}
        key_row = next(e for e in entries if e["target"] == "/api/gateway/keys")
        assert key_row["tenant"] == "acme" and key_row["role"] == "tenant-admin" and key_row["kind"] == "token"

        # A tenant role sees its tenant's rows only; ?user= filters.
        mine = (await plane.get("/api/v1/audit", headers={"Authorization": f"Bearer {tara}"})).json()["entries"]
        assert mine and {e["tenant"] for e in mine} == {"acme"}
        assert (await plane.get("/api/v1/audit?tenant=other", headers={"Authorization": f"Bearer {tara}"})
                ).status_code == 404
        olgas = (await plane.get("/api/v1/audit?user=olga", headers=AUTH)).json()["entries"]
        assert olgas and {e["principal"] for e in olgas} == {"olga"}

        # No secret anywhere: not in the audit rows, not in the files, not in the logs.
        secrets = [PASSWORD, "a wrong password", olga, tara, api_key, ADMIN, session, reply.json()["csrf_token"]]
        # The plane's and the server's log lines (not the test client's own httpcore debug lines).
        server_logs = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(("httpcore", "httpx")))
        text = str(entries) + server_logs
        raw = b"".join(p.read_bytes() for p in plane.data_dir.glob("audit.db*"))
        for secret in secrets:
            assert secret not in text and secret.encode() not in raw


async def test_a_cookie_state_change_is_audited_with_the_session_user(plane):
    with trio.fail_after(30):
        await make_user(plane, "olga", "operator")
        reply, session = await signin(plane, "olga")
        headers = {**cookie(session), "X-CSRF-Token": reply.json()["csrf_token"]}
        assert (await plane.post("/api/cluster/tokens", headers=headers, json={"name": "n"})).status_code == 201
        assert (await plane.post("/api/cluster/tokens", headers=cookie(session), json={"name": "m"})).status_code == 403
        entries = (await plane.get("/api/v1/audit?user=olga", headers=AUTH)).json()["entries"]
        tokens = [(e["kind"], e["status"]) for e in entries if e["target"] == "/api/cluster/tokens"]
        assert sorted(tokens) == [("session", 201), ("session", 403)]


def test_passwords_are_scrypt_with_a_salt_of_their_own():
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    kind, n, r, p, salt, digest = first.split("$")
    assert (kind, int(n) >= 2**14, r, p) == ("scrypt", True, "8", "1")
    assert first != second and salt != second.split("$")[4]
    assert PASSWORD not in first
    assert verify_password(PASSWORD, first) and verify_password(PASSWORD, second)
    assert not verify_password("correct horse batterx", first)
    assert not verify_password(PASSWORD, None) and not verify_password(PASSWORD, "garbage")


def test_the_log_keeps_the_newest_rows_only(tmp_path, monkeypatch):
    from runtime.api import audit

    monkeypatch.setattr(audit, "PRUNE_EVERY", 10)
    log = audit.AuditLog(tmp_path / "audit.db", keep_rows=25, keep_days=1)
    try:
        for i in range(100):
            log.record(audit.AuditEntry(at=time.time() - (86400 * 2 if i == 95 else 0), principal="anonymous",
                                        kind="anonymous", role=None, action=None, method="POST",
                                        target=f"/api/x/{i}", tenant=None, remote="127.0.0.1", status=401))
        targets = [e["target"] for e in log.entries(limit=1000)]
        assert f"/api/x/{99}" == targets[0] and len(targets) <= 35 and "/api/x/95" not in targets
    finally:
        log.close()
