"""flowctl status's tables: one name per node in every table."""

import io

import pytest
from rich.console import Console

from flowctl.commands import status_view


def _node(node_id, name, replicas):
    return {"node_id": node_id, "name": name, "state": "ready", "connection": 1, "last_heartbeat_s": 0.4,
            "heartbeats": 9, "outstanding": 0, "cpu_count": 4, "ram_mb": 8000, "free_ram_mb": 6000,
            "gpus": [], "replicas": replicas}


def _replica(replica_id, node_id):
    return {"replica_id": replica_id, "version": "1.0.0", "node_id": node_id, "attempt": 0, "state": "ready",
            "detail": ""}


def _render(monkeypatch, data):
    buffer = io.StringIO()
    monkeypatch.setattr(status_view, "out", Console(file=buffer, width=250, highlight=False))
    status_view.render_status(data)
    return buffer.getvalue()


@pytest.fixture
def status():
    return {"nodes": [_node("n-4f1c2a", "gpu-box", 1), _node("n-9e07bd", "laptop", 1)],
            "deployments": [{"service": "echo", "version": "1.0.0", "desired": 2, "ready": 2, "models": [],
                             "unplaced": None,
                             "replicas": [_replica("r1", "n-4f1c2a"), _replica("r2", "n-9e07bd")]}],
            "models": []}


def test_deployments_name_nodes_by_name_as_the_nodes_table_does(monkeypatch, status):
    text = _render(monkeypatch, status)
    assert "r1@gpu-box" in text and "r2@laptop" in text
    assert "n-4f1c2a" not in text and "n-9e07bd" not in text


def test_nodes_sharing_a_name_are_told_apart_by_id_in_both_tables(monkeypatch, status):
    status["nodes"][1]["name"] = "gpu-box"
    text = _render(monkeypatch, status)
    assert "r1@gpu-box (n-4f1c2a)" in text and "r2@gpu-box (n-9e07bd)" in text
    assert text.count("gpu-box (n-4f1c2a)") == 2 and text.count("gpu-box (n-9e07bd)") == 2


def test_a_replica_on_a_node_no_longer_listed_shows_its_id(monkeypatch, status):
    status["nodes"].pop()
    assert "r2@n-9e07bd" in _render(monkeypatch, status)


def test_gpus_track_and_port_are_shown(monkeypatch, status):
    status["nodes"][0]["gpus"] = [{"index": 0, "name": "A100", "vram_mb": 40960},
                                  {"index": 1, "name": "A100", "vram_mb": 40960}]
    dep = status["deployments"][0]
    dep.update(track="stable", port=5008, unplaced="laptop has port 5008 taken by nmt r2",
               track_error="cannot follow stable: hub at http://hub:5000 is unreachable: ConnectError")
    dep["replicas"][0]["gpus"] = [1]
    text = _render(monkeypatch, status)
    assert "0: A100 (40960 MB), 1: A100 (40960 MB)" in text
    assert "r1@gpu-box gpu 1 ready" in text and "r2@laptop ready" in text
    assert "echo (port 5008)" in text and "stable" in text
    assert "laptop has port 5008 taken by nmt r2; cannot follow stable" in text
