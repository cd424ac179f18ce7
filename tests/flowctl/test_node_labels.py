"""`--label KEY=VALUE` on `flowctl node join` and `flowctl up` (or FLOWCTL_NODE_LABELS): a node's
labels for job step selectors, checked before anything starts (usage error, exit 2)."""

import subprocess
import sys

import pytest
import typer

from flowctl.commands.join import parse_labels


def test_labels_from_options():
    assert parse_labels(["gpu=a100", "zone=eu-1", "spot="]) == {"gpu": "a100", "zone": "eu-1", "spot": ""}


def test_labels_from_the_environment_when_no_option_is_given(monkeypatch):
    monkeypatch.setenv("FLOWCTL_NODE_LABELS", "gpu=a100, zone=eu-1,")
    assert parse_labels([]) == {"gpu": "a100", "zone": "eu-1"}
    assert parse_labels(["rack=7"]) == {"rack": "7"}  # options win over the environment


def test_no_labels(monkeypatch):
    monkeypatch.delenv("FLOWCTL_NODE_LABELS", raising=False)
    assert parse_labels([]) == {}


@pytest.mark.parametrize("values, message", [
    (["gpu"], "'gpu' is not KEY=VALUE"),
    (["=a100"], "label key ''"),
    (["gpu=<script>"], "label gpu='<script>'"),
    (["node=n1"], "'node' is reserved"),
    (["node_id=x"], "'node_id' is reserved"),
    (["gpu=a100", "gpu=h100"], "'gpu' given twice"),
    ([f"k{i}=v" for i in range(33)], "33 labels: at most 32"),
])
def test_bad_labels_are_usage_errors_naming_the_label(values, message):
    with pytest.raises(typer.BadParameter, match=message.replace("[", r"\[")):
        parse_labels(values)


@pytest.mark.parametrize("command", [["node", "join", "http://127.0.0.1:9"], ["up", "--port", "9"]])
def test_the_commands_refuse_a_bad_label_before_starting(command, tmp_path):
    done = subprocess.run([sys.executable, "-m", "flowctl", *command, "--data-dir", str(tmp_path),
                           "--label", "gpu=<x>"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--label" in done.stderr and "gpu='<x>'" in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written
