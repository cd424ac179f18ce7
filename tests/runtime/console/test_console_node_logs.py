"""The node page shows the last lines of each worker's log, sent by a real node over its heartbeats.

A real `flowctl up` (plane + its local node) runs the echo worker; its log lines reach the page
and its live feed, escaped, and only for the cluster-wide roles.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from packer import pack_dir
from tests.runtime.console.conftest import WAIT_S, Plane, poll

ECHO_DIR = Path(__file__).resolve().parents[3] / "examples" / "echo"
HOSTILE = '<script>alert("log")</script>'


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """A `flowctl up` with one-second heartbeats running one echo replica; (plane, its data dir)."""
    tmp = tmp_path_factory.mktemp("node-logs")
    before = os.environ.get("FLOWCTL_HEARTBEAT_INTERVAL")
    os.environ["FLOWCTL_HEARTBEAT_INTERVAL"] = "1"
    try:
        up = Plane(tmp)
    finally:
        if before is None:
            del os.environ["FLOWCTL_HEARTBEAT_INTERVAL"]
        else:
            os.environ["FLOWCTL_HEARTBEAT_INTERVAL"] = before
    try:
        bundle = pack_dir(ECHO_DIR, tmp_path_factory.mktemp("echo-dist"))
        up.cli("publish", str(bundle.path), "--hub", up.url)
        up.cli("deploy", "echo")  # waits until ready
        for name, role, tenant in (("ops", "viewer", None), ("shopadm", "tenant-admin", "shop")):
            if tenant:
                assert up.admin.post("/api/gateway/tenants", json={"name": tenant}).status_code == 201
            up.user(name, role, tenant)
        yield up, tmp / "data"
    finally:
        up.stop()


def node_id(plane: Plane) -> str:
    return plane.status()["nodes"][0]["node_id"]


def test_the_node_page_shows_each_workers_last_log_lines(fleet):
    plane, _ = fleet
    with closing(plane.signed_in("ops")) as viewer:
        page = poll(lambda: (r := viewer.get(f"/ui/nodes/{node_id(plane)}")).status_code == 200
                    and "echo worker listening on" in r.text and r.text, what="the echo worker's log on the page")
        assert "Worker logs" in page and "[flowctl] starting echo" in page


def test_a_tenant_role_sees_no_worker_log(fleet):
    plane, _ = fleet
    with closing(plane.signed_in("shopadm")) as tenant:
        r = tenant.get(f"/ui/nodes/{node_id(plane)}")
        assert r.status_code == 403 and "echo worker listening" not in r.text
        r = tenant.get(f"/ui/live/nodes/{node_id(plane)}")
        assert r.status_code == 403 and "echo worker listening" not in r.text


def test_a_hostile_log_line_is_escaped_on_the_page_and_in_the_live_feed(fleet):
    plane, data = fleet
    logs = [p for p in data.rglob("logs/echo*.log")]
    assert logs, f"no echo worker log under {data}"
    with logs[0].open("a") as log:
        log.write(f"{HOSTILE}\n")
    nid = node_id(plane)
    with closing(plane.signed_in("ops")) as viewer:
        page = poll(lambda: (r := viewer.get(f"/ui/nodes/{nid}")).status_code == 200
                    and "alert(" in r.text and r.text, what="the hostile line on the page")
        assert HOSTILE not in page and "&lt;script&gt;alert(&#34;log&#34;)&lt;/script&gt;" in page
        deadline = time.monotonic() + WAIT_S
        with viewer.stream("GET", f"/ui/live/nodes/{nid}", timeout=httpx.Timeout(20, read=WAIT_S)) as feed:
            assert feed.status_code == 200 and feed.headers["content-type"].startswith("text/event-stream")
            for line in feed.iter_lines():
                assert time.monotonic() < deadline, "no fragment with the replicas in time"
                if line.startswith("data: "):
                    fragment = json.loads(line[len("data: "):])
                    assert fragment["id"] == "replicas"
                    assert HOSTILE not in fragment["html"] and "&lt;script&gt;" in fragment["html"]
                    assert "echo worker listening on" in fragment["html"]
                    break
