"""Watching a service directory: what counts as a change, the bound on files, the debounce."""

import os

import trio

from runtime.node.agent.watch import snapshot, wait_for_change


def test_bytecode_virtualenvs_and_ignored_files_are_not_watched(tmp_path):
    (tmp_path / "worker.py").write_text("print('hi')\n")
    for skipped in ("__pycache__/worker.cpython-311.pyc", ".venv/lib/x.py", ".git/HEAD", "logs/run.log",
                    "node_modules/a.js"):
        (tmp_path / skipped).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / skipped).write_text("x")
    (tmp_path / ".flowctlignore").write_text("logs/\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("")
    assert sorted(snapshot(tmp_path)) == [".flowctlignore", "pkg/mod.py", "worker.py"]


def test_a_huge_tree_costs_a_bounded_walk(tmp_path):
    for i in range(30):
        (tmp_path / f"f{i}").write_text("")
    assert len(snapshot(tmp_path, max_files=10)) == 10


def test_a_missing_directory_is_an_empty_snapshot(tmp_path):
    assert snapshot(tmp_path / "gone") == {}


async def test_one_restart_for_a_burst_of_writes_once_they_settle(tmp_path):
    target = tmp_path / "worker.py"
    target.write_text("v1")
    before = snapshot(tmp_path)
    writes = 0

    async def editor():
        nonlocal writes
        for n in range(5):  # an editor's save: several writes close together
            await trio.sleep(0.03)
            target.write_text(f"v{n + 2}" * (n + 1))
            os.utime(target, ns=(n + 10**18, n + 10**18))
            writes += 1

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(editor)
            after = await wait_for_change(tmp_path, before, interval=0.02, debounce=0.5)
    assert writes == 5  # it waited for the burst to end
    assert after == snapshot(tmp_path) and after != before


async def test_a_tree_that_never_settles_still_restarts_after_settle_max(tmp_path):
    target = tmp_path / "worker.py"
    target.write_text("")
    before = snapshot(tmp_path)

    async def churn():
        n = 0
        while True:
            n += 1
            os.utime(target, ns=(n, n))
            await trio.sleep(0.01)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(churn)
            await wait_for_change(tmp_path, before, interval=0.02, debounce=0.05, settle_max=0.3)
            nursery.cancel_scope.cancel()
