"""Usage is written in batches into the state store, and several planes' usage adds up in one database
(SQLite files and a real PostgreSQL: the `state` fixture runs each test on both)."""

from __future__ import annotations

import pytest
import trio

from runtime.dispatch.limits import Principal
from runtime.gateway import service as service_module
from runtime.gateway.keys import KeyStore
from runtime.gateway.service import KeyService
from tests.polling import wait_until

ADMIN_HASH = "0" * 64


def totals(rows):
    return {(r["model"], r["via"]): (r["requests"], r["prompt_tokens"], r["completion_tokens"], r["audio_seconds"])
            for r in rows}


async def test_two_planes_usage_adds_up_in_one_database(state):
    one, two = KeyService.open(state, ADMIN_HASH), KeyService.open(state, ADMIN_HASH)
    try:
        who = Principal("acme", "k1")
        for _ in range(3):
            one.record_usage(who, "echo", 10, 5)
        two.record_usage(who, "echo", 1, 2)
        two.record_usage(who, "whisper", 0, 7, via="session", audio_seconds=1.5)
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:  # each plane's flusher, stopped: the last flush runs
                await nursery.start(one.run)
                await nursery.start(two.run)
                nursery.cancel_scope.cancel()
        assert totals(await one.run_store(one.store.usage, "acme")) == {
            ("echo", "http"): (4, 31, 17, 0.0), ("whisper", "session"): (1, 0, 7, 1.5)}
        assert not one._pending and not two._pending
    finally:
        one.store.close()
        two.store.close()


async def test_usage_is_flushed_once_enough_rows_wait(state, monkeypatch):
    monkeypatch.setattr(service_module, "USAGE_FLUSH_INTERVAL", 60.0)  # the interval alone would not
    monkeypatch.setattr(service_module, "USAGE_FLUSH_ROWS", 3)
    keys = KeyService.open(state, ADMIN_HASH)
    try:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                await nursery.start(keys.run)
                for model in ("a", "b", "c"):
                    keys.record_usage(Principal("acme", "k1"), model, 1, 1)
                await wait_until(lambda: len(keys.store.usage("acme")) == 3)
                nursery.cancel_scope.cancel()
    finally:
        keys.store.close()


async def test_a_failed_flush_keeps_the_rows_for_the_next(tmp_path):
    keys = KeyService(KeyStore(tmp_path / "gateway.db"), ADMIN_HASH)
    who = Principal("acme", "k1")
    keys.record_usage(who, "echo", 10, 5)
    keys.store.close()  # the database is gone for a while: writing fails
    with pytest.raises(Exception, match="closed"):
        await keys.flush()
    keys.record_usage(who, "echo", 1, 1)  # counted meanwhile
    keys.store = KeyStore(tmp_path / "gateway.db")  # back
    try:
        await keys.flush()
        assert totals(keys.store.usage("acme")) == {("echo", "http"): (2, 11, 6, 0.0)}
    finally:
        keys.store.close()


async def test_the_flusher_survives_a_database_that_fails(tmp_path, caplog):
    keys = KeyService(KeyStore(tmp_path / "gateway.db"), ADMIN_HASH)
    broken = keys.store
    broken.close()
    keys.record_usage(Principal("acme", "k1"), "echo", 3, 4)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(keys.run)
            await wait_until(lambda: "usage not written yet, 1 rows kept" in caplog.text)
            keys.store = KeyStore(tmp_path / "gateway.db")
            await wait_until(lambda: not keys._pending)
            nursery.cancel_scope.cancel()
    try:
        assert totals(keys.store.usage("acme")) == {("echo", "http"): (1, 3, 4, 0.0)}
    finally:
        keys.store.close()
