"""Rich tables for `flowctl status`."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.table import Table

from flowctl.console import out

_STATE_STYLE = {"ready": "green", "joining": "yellow", "lost": "red", "gone": "dim",
                "pending": "yellow", "installing": "yellow", "starting": "yellow", "failed": "red",
                "stopping": "dim", "stopped": "dim"}


def _state(state: str) -> str:
    style = _STATE_STYLE.get(state, "")
    return f"[{style}]{state}[/]" if style else state


def node_labels(nodes: list[dict[str, Any]]) -> dict[str, str]:
    """Each node's label in every table: its name, with its id where two nodes share the name."""
    counts = Counter(n["name"] for n in nodes)
    return {n["node_id"]: n["name"] if counts[n["name"]] == 1 else f"{n['name']} ({n['node_id']})" for n in nodes}


def _gpus(replica: dict[str, Any]) -> str:
    """' gpu 0,1' for a replica given GPUs, else ''."""
    gpus = replica.get("gpus") or []
    return f" gpu {','.join(str(g) for g in gpus)}" if gpus else ""


def render_status(data: dict[str, Any]) -> None:
    """Print nodes, deployments and models as three tables; nodes are named the same way in each."""
    label = node_labels(data["nodes"])
    nodes = Table(title="Nodes", title_justify="left")
    for col in ("NAME", "STATE", "LAST HEARTBEAT", "IN FLIGHT", "CPU", "RAM FREE / TOTAL", "GPUS", "REPLICAS"):
        nodes.add_column(col)
    for n in data["nodes"]:
        gpus = ", ".join(f"{g.get('index', i)}: {g['name']} ({g['vram_mb']} MB)"
                         for i, g in enumerate(n["gpus"])) or "-"
        nodes.add_row(label[n["node_id"]], _state(n["state"]), f"{n['last_heartbeat_s']:.1f} s ago",
                      str(n["outstanding"]), str(n["cpu_count"]), f"{n['free_ram_mb']} / {n['ram_mb']} MB",
                      gpus, str(n["replicas"]))
    out.print(nodes if data["nodes"] else "No nodes have joined.")

    deps = Table(title="Deployments", title_justify="left")
    for col in ("SERVICE", "VERSION", "TRACK", "READY", "REPLICAS", "NOTE"):
        deps.add_column(col)
    for d in data["deployments"]:
        placed = ", ".join(f"{r['replica_id']}@{label.get(r['node_id'], r['node_id'])}{_gpus(r)} {_state(r['state'])}"
                           for r in d["replicas"]) or "-"
        service = f"{d['service']} (port {d['port']})" if d.get("port") else d["service"]
        note = "; ".join(n for n in (d.get("unplaced"), d.get("track_error")) if n)
        deps.add_row(service, d["version"], d.get("track") or "-", f"{d['ready']}/{d['desired']}", placed, note)
    out.print(deps if data["deployments"] else "No deployments.")

    models = Table(title="Models", title_justify="left")
    for col in ("MODEL", "SERVICE", "READY REPLICAS"):
        models.add_column(col)
    for m in data["models"]:
        models.add_row(m["model"], m["service"], str(m["replicas"]))
    out.print(models if data["models"] else "No models are ready.")
