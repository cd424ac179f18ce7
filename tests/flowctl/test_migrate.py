"""`flowctl migrate` on both state engines: applies every store's migrations once, reports, refuses newer."""

import pytest
from typer.testing import CliRunner

from flowctl.app import app
from flowctl.errors import CliError
from hub_store import sql
from runtime.state import open_plane_state, store_schemas


@pytest.fixture(autouse=True)
def no_config(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWCTL_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.delenv("FLOWCTL_STATE", raising=False)


def test_migrate_then_check(state_url, tmp_path):
    runner = CliRunner()
    args = ["migrate", "--state", state_url, "--data-dir", str(tmp_path / "data")]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    for schema in store_schemas():
        assert f"{schema.migrations.store}: schema 0 -> {schema.migrations.latest}" in first.output
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "cluster: schema 3, current" in again.output
    check = runner.invoke(app, [*args, "--check"])
    assert check.exit_code == 0 and "behind" not in check.output


def test_check_on_a_fresh_state_says_behind_and_changes_nothing(tmp_path):
    directory = tmp_path / "fresh"
    directory.mkdir()
    result = CliRunner().invoke(app, ["migrate", "--state", f"sqlite:///{directory}", "--check"])
    assert result.exit_code == 1 and "cluster: schema 0, behind (this flowctl: 3)" in result.output
    assert list(directory.iterdir()) == []


def test_a_newer_schema_is_refused_in_one_line(state_url, tmp_path):
    state = open_plane_state(state_url, tmp_path)
    try:
        newer = sql.Migrations("users", (*store_schemas()[2].migrations.steps, "CREATE TABLE later (x TEXT)"))
        sql.open_store(state, newer, "users.db").close()
    finally:
        state.close()
    result = CliRunner().invoke(app, ["migrate", "--state", state_url])
    assert isinstance(result.exception, CliError)  # printed as `error: ...`, exit 1, by flowctl's main
    assert str(result.exception) == ("the users store was written by a newer flowctl (schema 2 > 1); "
                                     "upgrade flowctl")


@pytest.mark.parametrize("url, words", [("mysql://h/db", "scheme must be sqlite:// or postgresql://"),
                                        ("postgresql://flow:hunter2@127.0.0.1:1/db?pool_timeout=1",
                                         "cannot connect to the state database")])
def test_bad_or_unreachable_state_is_one_line(url, words):
    result = CliRunner().invoke(app, ["migrate", "--state", url])
    assert isinstance(result.exception, CliError)
    assert words in str(result.exception) and "hunter2" not in str(result.exception)
    assert "\n" not in str(result.exception)


@pytest.mark.engines
def test_check_changes_nothing_on_postgresql(postgres_url):
    import psycopg

    result = CliRunner().invoke(app, ["migrate", "--state", postgres_url, "--check"])
    assert result.exit_code == 1 and "cluster: schema 0, behind (this flowctl: 3)" in result.output
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg_%' "
                            "AND nspname NOT IN ('public', 'information_schema')").fetchall() == []
        assert conn.execute("SELECT to_regclass('public.flowctl_schema')").fetchone()[0] is None
