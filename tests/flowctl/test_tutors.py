"""The tutor table setting: inline in the config file, or a TOML/JSON file named by the file, --tutors or FLOWCTL_TUTORS."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flowctl.config import load_config
from flowctl.errors import CliError
from tests.flowctl.test_config import home, write_config  # noqa: F401 - home is an autouse fixture

TABLE = """
[1]
model = "gemma-3-270m"
asr_model = "whisper-base"
tts_model = "piper-joe"
voice = "joe"
"""
PIPELINE = {"model": "gemma-3-270m", "asr_model": "whisper-base", "tts_model": "piper-joe", "voice": "joe"}


def test_inline_in_the_config_file(home: Path) -> None:  # noqa: F811
    write_config(home, "[tutors.1]\nmodel = \"gemma-3-270m\"\nasr_model = \"whisper-base\"\n"
                       "tts_model = \"piper-joe\"\nvoice = \"joe\"\n[tutors.2]\nmodel = \"echo\"\n")
    assert load_config().tutors == {"1": PIPELINE, "2": {"model": "echo"}}


def test_a_file_from_the_flag_the_environment_or_the_config_file(home: Path, tmp_path: Path,  # noqa: F811
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "tutors.toml"
    toml.write_text(TABLE)
    as_json = tmp_path / "tutors.json"
    as_json.write_text(json.dumps({"7": {"model": "echo", "system_prompt": "Be brief."}}))
    assert load_config(tutors=toml).tutors == {"1": PIPELINE}
    monkeypatch.setenv("FLOWCTL_TUTORS", str(as_json))
    cfg = load_config()
    assert cfg.tutors == {"7": {"model": "echo", "system_prompt": "Be brief."}}
    assert cfg.sources["tutors"] == "FLOWCTL_TUTORS"
    monkeypatch.delenv("FLOWCTL_TUTORS")
    config = write_config(home, 'tutors = "tutors.toml"\n')
    (config.parent / "tutors.toml").write_text(TABLE)  # relative to the config file
    assert load_config().tutors == {"1": PIPELINE}
    assert load_config().sources["tutors"] == str(config)


def test_no_table_by_default(home: Path) -> None:  # noqa: F811
    assert load_config().tutors == {}


@pytest.mark.parametrize(("text", "message"), [
    ("[1]\nasr_model = \"whisper-base\"\n", "tutor 1 needs a \"model\" (its LLM)"),
    ("[1]\nmodel = \"echo\"\nspeed = \"fast\"\n", "tutor 1: unknown field 'speed'"),
    ("[1]\nmodel = \"bad model\"\n", "tutor 1: model 'bad model' is not a model id"),
    ("[1]\nmodel = \"echo\"\nvoice = \"joe\"\n", "tutor 1 names a voice but no tts_model"),
    ("[1]\nmodel = 5\n", "tutor 1: model must be a string, got 5"),
    ("1 = \"echo\"\n", "tutor 1 must be a table"),
    ("[1\n", "the tutors file is not valid TOML"),
])
def test_a_bad_table_is_one_line_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "tutors.toml"
    path.write_text(text)
    with pytest.raises(CliError) as caught:
        load_config(tutors=path)
    assert message in str(caught.value) and str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_missing_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWCTL_TUTORS", str(tmp_path / "nope.toml"))
    with pytest.raises(CliError, match=r"FLOWCTL_TUTORS: cannot read the tutors file .*nope.toml"):
        load_config()


@pytest.mark.parametrize("command", ["up", "serve"])
def test_the_flag_is_in_the_help(command: str) -> None:
    result = subprocess.run([sys.executable, "-m", "flowctl", command, "--help"], capture_output=True, text=True,
                            timeout=60, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and "--tutors" in result.stdout and "FLOWCTL_TUTORS" in result.stdout


def test_up_refuses_a_bad_table_before_starting(tmp_path: Path) -> None:
    path = tmp_path / "tutors.toml"
    path.write_text("[1]\nvoice = \"joe\"\n")
    result = subprocess.run([sys.executable, "-m", "flowctl", "up", "--port", "1", "--tutors", str(path),
                             "--data-dir", str(tmp_path / "d")], capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "FLOWCTL_CONFIG": str(tmp_path / "c")})
    assert result.returncode != 0 and "tutor 1 needs a \"model\"" in result.stderr
