"""A node's id and credential on disk, and a node that restarts rejoining as itself."""

import os
import stat
from functools import partial

import pytest
import trio

from runtime.node.agent import JoinRefused
from runtime.node.agent.executor import ExecutorSettings
from runtime.node.agent.identity import (
    CREDENTIAL_FILE,
    node_identity,
    read_credential,
    save_credential,
)
from runtime.node.agent.serve import NodeSettings, run_node
from runtime.plane import PlaneSettings, serve_control_plane
from tests.polling import wait_until


def test_the_node_id_is_made_once_and_kept(tmp_path):
    node_id = node_identity(tmp_path / "node")
    assert len(node_id) == 16 and node_identity(tmp_path / "node") == node_id


def test_the_credential_is_owner_only_and_written_whole(tmp_path):
    old_umask = os.umask(0o022)  # the common one, under which plain creation is world-readable
    try:
        assert read_credential(tmp_path) == ""
        save_credential(tmp_path, "fnc_one_secret")
        save_credential(tmp_path, "fnc_two_secret")
    finally:
        os.umask(old_umask)
    path = tmp_path / CREDENTIAL_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_credential(tmp_path) == "fnc_two_secret"
    assert sorted(p.name for p in tmp_path.iterdir()) == [CREDENTIAL_FILE]  # no temporary left


async def test_a_restarted_node_rejoins_as_itself_with_its_credential(tmp_path):
    settings = PlaneSettings(data_dir=tmp_path / "plane", port=0, roles=("hub", "scheduler"),
                             heartbeat_interval=0.2)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(partial(serve_control_plane, settings, admin_key="k"))
            store, registry = handle.scheduler.store, handle.scheduler.registry
            record, token = store.create_token("desk")
            node = NodeSettings(url=handle.url, token=token, data_dir=tmp_path / "node", name="desk",
                                executor=ExecutorSettings(grace_s=2))
            for attempt in range(2):  # the second start presents the credential, not the token
                scope = trio.CancelScope()

                async def run(task_status=trio.TASK_STATUS_IGNORED, scope=scope, node=node):
                    with scope:
                        await run_node(node, task_status=task_status)

                welcome = await nursery.start(run)
                assert welcome.node_id == node_identity(tmp_path / "node")
                assert bool(welcome.credential) == (attempt == 0)
                scope.cancel()
                await wait_until(lambda node_id=welcome.node_id: registry.get(node_id).state == "lost")
                node = NodeSettings(url=handle.url, token="", data_dir=tmp_path / "node", name="desk",
                                    executor=ExecutorSettings(grace_s=2))
            assert [n.node_id for n in registry.nodes()] == [welcome.node_id]
            assert stat.S_IMODE((tmp_path / "node" / CREDENTIAL_FILE).stat().st_mode) == 0o600
            assert store.enrolled_nodes() == {record.token_id: [welcome.node_id]}

            # Once revoked, a restart is refused with the reason, and the token is not tried.
            await handle.scheduler.revoke_token("desk")
            with pytest.raises(JoinRefused, match="credential .*revoked"):
                await run_node(NodeSettings(url=handle.url, token=token, data_dir=tmp_path / "node"))
            # A node that never joined needs a token.
            with pytest.raises(JoinRefused, match="needs a join token"):
                await run_node(NodeSettings(url=handle.url, token="", data_dir=tmp_path / "fresh"))
            nursery.cancel_scope.cancel()
