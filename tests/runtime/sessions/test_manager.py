import pytest
import trio

from runtime.dispatch.limits import Limits, Principal
from runtime.sessions.history import History
from runtime.sessions.manager import SessionError, SessionManager


async def test_limits_answer_503_for_the_gateway_and_429_for_a_tenant():
    manager = SessionManager(max_sessions=3, max_per_tenant=2)
    manager.create("a", "echo")
    manager.create("a", "echo")
    with pytest.raises(SessionError) as info:
        manager.create("a", "echo")
    assert info.value.status == 429 and "maximum of 2 sessions" in info.value.detail
    manager.create("b", "echo")
    with pytest.raises(SessionError) as info:
        manager.create("c", "echo")
    assert info.value.status == 503 and "maximum number of sessions (3) reached" in info.value.detail


async def test_another_tenants_session_is_a_404_like_a_missing_one():
    manager = SessionManager()
    mine = manager.create("a", "echo", metadata={"tutor_id": 1})
    for tenant, sid in (("b", mine.session_id), ("a", "nope")):
        with pytest.raises(SessionError) as info:
            manager.get(sid, tenant)
        assert info.value.status == 404
    with pytest.raises(SessionError):
        manager.delete(mine.session_id, "b")
    assert manager.list("b") == [] and manager.list("a") == [mine]
    assert mine.to_json()["tutor_id"] == 1 and "engine_token" not in mine.to_json()


async def test_engine_token_works_only_for_its_own_session():
    manager = SessionManager()
    one, two = manager.create("a", "echo"), manager.create("a", "echo")
    assert manager.authenticate(one.session_id, one.token) is one
    assert manager.authenticate(one.session_id, two.token) is None
    assert manager.authenticate(one.session_id, None) is None
    assert manager.authenticate("nope", one.token) is None


async def test_idle_sessions_expire_and_activity_postpones_it(autojump_clock):
    manager = SessionManager(idle_timeout=60)
    busy, idle = manager.create("a", "echo"), manager.create("a", "echo")
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run_reaper)
        for _ in range(10):
            await trio.sleep(10)
            busy.touch()
        nursery.cancel_scope.cancel()
    assert idle.closed.is_set() and "without activity" in idle.close_reason
    assert not busy.closed.is_set() and manager.active == 1


async def test_revoking_a_key_or_removing_a_tenant_closes_its_sessions():
    manager = SessionManager(max_sessions=4)
    by_k1, by_k2 = manager.create("a", "echo", key_id="k1"), manager.create("a", "echo", key_id="k2")
    other = manager.create("b", "echo", key_id="k3")
    manager.close_revoked(["k1"])
    assert by_k1.closed.is_set() and "API key k1" in by_k1.close_reason and "revoked" in by_k1.close_reason
    assert manager.authenticate(by_k1.session_id, by_k1.token) is None  # a new socket is refused
    assert not by_k2.closed.is_set() and manager.active == 2
    manager.close_revoked(["k2"], "a")
    assert by_k2.close_reason == "tenant 'a' was removed" and manager.list("a") == []
    assert not other.closed.is_set() and manager.active == 1
    manager.create("c", "echo")
    manager.create("c", "echo")
    manager.create("c", "echo")  # the slots came back



async def test_a_tenants_new_limits_reach_its_open_sessions():
    manager = SessionManager()
    mine = manager.create("a", "echo", key_id="k1", principal=Principal("a", "k1", Limits(rpm=5), Limits(rpm=60)))
    theirs = manager.create("b", "echo", key_id="k2", principal=Principal("b", "k2"))
    manager.retune("a", Limits(rpm=1, max_sessions=3))
    assert mine.principal == Principal("a", "k1", Limits(rpm=5), Limits(rpm=1, max_sessions=3))
    assert theirs.principal == Principal("b", "k2")


    history = History(system_prompt="be brief", max_tokens=60)
    for i in range(20):
        history.add("user", f"question {i} " * 3)
        history.add("assistant", f"answer {i} " * 3)
    messages = history.messages()
    assert messages[0] == {"role": "system", "content": "be brief"}
    assert messages[1]["role"] == "user"  # never starts with an orphaned answer
    assert messages[-1]["content"].startswith("answer 19")
    assert history.tokens() <= 60 and len(messages) < 10
    history.add("user", "x" * 1000)  # alone over budget, the newest turn still stays
    assert history.messages()[-1]["content"] == "x" * 1000
