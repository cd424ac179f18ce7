"""Users, tokens, sessions and the audit log on both state engines."""

import time

import pytest

from runtime.api import audit
from runtime.api.responses import ApiError
from runtime.api.users import UserStore

PASSWORD = "long enough pw"


@pytest.fixture
def users(state):
    store = UserStore(state)
    yield store
    store.close()


def test_users_tokens_and_sessions(users):
    users.create_user("olga", "admin", PASSWORD)
    users.create_user("eve", "tenant-viewer", PASSWORD, tenant="acme")
    with pytest.raises(ApiError) as taken:
        users.create_user("olga", "viewer", PASSWORD)
    assert taken.value.status == 409
    assert [u.name for u in users.users()] == ["eve", "olga"] and [u.name for u in users.users("acme")] == ["eve"]
    assert users.check_password("olga", PASSWORD).role == "admin" and users.check_password("olga", "nope!!") is None
    token, record = users.create_token("olga", "ci", expires_at=time.time() + 60)
    assert users.token_principal(token).name == "olga"
    assert [t.token_id for t in users.tokens("olga")] == [record.token_id]
    session_id, principal = users.open_session("olga")
    assert users.session_principal(session_id).csrf_token == principal.csrf_token
    users.update_user("olga", "viewer", None)  # ends its sessions; its tokens carry the new role
    assert users.session_principal(session_id) is None and users.token_principal(token).role == "viewer"
    users.revoke_token("olga", record.token_id)
    assert users.token_principal(token) is None
    users.delete_user("olga")  # its tokens and sessions go with it
    with pytest.raises(ApiError):
        users.tokens("olga")


def test_the_audit_log_records_filters_and_prunes(state, monkeypatch):
    monkeypatch.setattr(audit, "PRUNE_EVERY", 10)
    log = audit.AuditLog(state, keep_rows=25, keep_days=1)
    try:
        for i in range(60):
            log.record(audit.AuditEntry(at=time.time() - (86400 * 2 if i == 55 else 0), principal=f"p{i % 2}",
                                        kind="token", role="admin", action="x", method="POST",
                                        target=f"/api/x/{i}", tenant="acme" if i % 3 == 0 else None,
                                        remote="127.0.0.1", status=201))
        targets = [e["target"] for e in log.entries(limit=1000)]
        assert targets[0] == "/api/x/59" and len(targets) <= 35 and "/api/x/55" not in targets
        assert {e["principal"] for e in log.entries(principal="p1")} == {"p1"}
        assert all(e["tenant"] == "acme" for e in log.entries(tenant="acme"))
    finally:
        log.close()
