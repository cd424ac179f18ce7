"""flowctl.fastparams: plain parameters converted without pydantic, the rest left to typer."""

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from flowctl import fastparams
from flowctl.fastparams import _plain_target


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [(str, (str, False)), (int, (int, False)), (Path, (Path, False)), (Path | None, (Path, False)),
     (list[Path], (Path, True)), (list[str] | None, (str, True)), (dict, None), (int | str, None),
     (list[dict], None)],
)
def test_plain_targets(annotation, expected):
    assert _plain_target(annotation) == expected


def test_commands_convert_and_reject_like_typer():
    fastparams.install()
    app = typer.Typer()

    @app.command()
    def cmd(path: Path, count: int = 1, names: list[str] = typer.Option([], "--name"),
            flag: bool = False, level: int = typer.Option(3, min=1, max=5)) -> None:
        typer.echo(f"{type(path).__name__}:{path} {count + 1} {names} {flag} {level}")

    runner = CliRunner()
    result = runner.invoke(app, ["a/b", "--count", "41", "--name", "x", "--name", "y", "--flag"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "PosixPath:a/b 42 ['x', 'y'] True 3"
    bad = runner.invoke(app, ["a", "--count", "many"])
    assert bad.exit_code == 2 and "'many' is not a valid integer" in bad.output
    ranged = runner.invoke(app, ["a", "--level", "9"])  # ranges still go through typer
    assert ranged.exit_code == 2
