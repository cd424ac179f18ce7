"""The overview's data for a big fleet: a page of nodes at a time, those not ready first."""

from __future__ import annotations

from runtime.api.access import Access
from runtime.console import ConsoleParts
from runtime.console.charts import usage_chart
from runtime.console.jobs_pages import dag_svg
from runtime.console.pages import NODES_PER_PAGE, overview_data
from runtime.control.messages import Heartbeat, Hello
from runtime.scheduler.service import Scheduler


async def no_manifest(service_id, version):
    raise LookupError(service_id)


async def test_nodes_come_a_page_at_a_time_the_not_ready_first(tmp_path):
    scheduler = Scheduler.open(tmp_path, no_manifest, hub_url="http://127.0.0.1:9", lost_after=3600.0)
    access = Access.open(tmp_path)
    try:
        for i in range(250):
            hello = Hello(node_id=f"{i:016x}", name=f"n{i:03d}", agent_version="t", cpu_count=4, ram_mb=8192)
            epoch = scheduler.registry.connect(hello)
            scheduler.registry.heartbeat(hello.node_id, epoch, Heartbeat(seq=1, free_ram_mb=4096))
            if i % 50 == 7:  # five nodes went away
                scheduler.registry.disconnect(hello.node_id, epoch)
        parts = ConsoleParts(access, scheduler=scheduler)
        first = overview_data(parts, 0)
        states = [n["state"] for n in first["nodes"]]
        assert len(first["nodes"]) == NODES_PER_PAGE and first["pages"] == 3 and first["node_total"] == 250
        assert sum(first["node_counts"].values()) == 250 and first["node_counts"].get("ready") == 245
        assert all(s != "ready" for s in states[:5]) and all(s == "ready" for s in states[5:])
        last = overview_data(parts, 99)  # past the end: the last page
        assert last["page"] == 2 and len(last["nodes"]) == 50
        assert len(overview_data(parts, None)["nodes"]) == 250
    finally:
        scheduler.store.close()
        access.close()


def test_charts_escape_names_and_draw_one_series_per_tenant_and_model():
    rows = [{"day": f"2026-01-0{d}", "tenant": "<b>acme</b>", "model": "echo", "requests": d, "prompt_tokens": 0,
             "completion_tokens": 0, "audio_seconds": 0.0} for d in range(1, 4)]
    svg = usage_chart(rows, "requests")
    assert "<b>" not in svg and "&lt;b&gt;acme&lt;/b&gt; / echo (6)" in svg and svg.count("<polyline") == 1
    assert "no usage yet" in usage_chart([], "requests")
    graph = dag_svg([("a", (), "succeeded"), ("<b>", ("a",), "running")])
    assert graph.count("<line") == 1 and "&lt;b&gt;" in graph and "<b>" not in graph
