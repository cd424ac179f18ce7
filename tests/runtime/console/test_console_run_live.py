"""The run page's step graph and attempts table follow the run live (SSE), against a real `flowctl up`
whose local node runs the steps in the echo bundle."""

from __future__ import annotations

import json
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from packer import pack_dir
from tests.runtime.console.conftest import WAIT_S, Plane

ECHO_DIR = Path(__file__).resolve().parents[3] / "examples" / "echo"
JOB = {"name": "two-steps", "trigger": {"type": "manual"},
       "steps": [{"name": "first", "service": "echo@1.0.0", "command": ["sh", "-c", "echo one; sleep 2"]},
                 {"name": "second", "service": "echo@1.0.0", "command": ["sh", "-c", "echo two; sleep 1"],
                  "needs": ["first"]}]}


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    up = Plane(tmp_path_factory.mktemp("run-live"))
    try:
        bundle = pack_dir(ECHO_DIR, tmp_path_factory.mktemp("echo-dist"))
        up.cli("publish", str(bundle.path), "--hub", up.url)
        for tenant in ("acme", "globex"):
            assert up.admin.post("/api/gateway/tenants", json={"name": tenant}).status_code == 201
        r = up.admin.post("/api/v1/jobs", json=JOB, params={"tenant": "acme"})
        assert r.status_code == 201, r.text
        up.user("watcher", "viewer")
        up.user("other", "tenant-viewer", "globex")
        yield up
    finally:
        up.stop()


def events(feed: httpx.Response):
    """(event name, data) of an SSE response, until it ends."""
    name = "message"
    deadline = time.monotonic() + WAIT_S
    for line in feed.iter_lines():
        assert time.monotonic() < deadline, "the feed did not end in time"
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            yield name, json.loads(line[len("data: "):])
            name = "message"


def test_graph_and_attempts_update_live_until_the_run_ends(plane):
    r = plane.admin.post("/api/v1/jobs/two-steps/trigger", params={"tenant": "acme"}, json={})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    with closing(plane.signed_in("watcher")) as viewer:
        page = viewer.get(f"/ui/runs/{run_id}").text
        assert f'data-live="/ui/runs/{run_id}/live"' in page and 'id="run-graph"' in page
        seen: list[tuple[str, str]] = []
        with viewer.stream("GET", f"/ui/runs/{run_id}/live", timeout=httpx.Timeout(20, read=WAIT_S)) as feed:
            assert feed.status_code == 200 and feed.headers["content-type"].startswith("text/event-stream")
            for name, data in events(feed):
                if name == "end":
                    break
                assert name == "fragment" and data["id"] in ("run-graph", "run-attempts")
                seen.append((data["id"], data["html"]))
            else:
                raise AssertionError("the feed closed without an end event")
    graphs = [html for part, html in seen if part == "run-graph"]
    tables = [html for part, html in seen if part == "run-attempts"]
    assert len(graphs) >= 2 and len(tables) >= 2, "the graph and attempts were sent once only, not as they changed"
    assert any("<td>first</td><td>1</td><td>running</td>" in t for t in tables)  # seen while it ran
    assert "<td>second</td><td>1</td><td>succeeded</td>" in tables[-1]
    assert graphs[-1].count("state-succeeded") == 2 and "<svg" in graphs[-1]
    assert (plane.admin.get(f"/api/v1/runs/{run_id}").json()["state"]) == "succeeded"


def test_another_tenants_run_feed_is_not_found(plane):
    r = plane.admin.post("/api/v1/jobs/two-steps/trigger", params={"tenant": "acme"}, json={})
    run_id = r.json()["run_id"]
    with closing(plane.signed_in("other")) as outsider:
        assert outsider.get(f"/ui/runs/{run_id}/live").status_code == 404
    with closing(plane.signed_in("watcher")) as viewer:
        assert viewer.get("/ui/runs/run_nope/live").status_code == 404
