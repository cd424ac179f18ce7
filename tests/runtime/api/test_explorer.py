"""The /docs explorer's script runs against the real description: every operation gets its form.

No browser here: node runs the page's script over a small stand-in DOM that records what it
builds, with `fetch` answering the plane's description and, for one operation, a reply.
"""

import json
import shutil
import subprocess

import pytest

from runtime.api.explorer import _SCRIPT
from runtime.api.openapi import operations
from runtime.plane_openapi import plane_document

NODE = shutil.which("node")

DOM = r"""
class El {
  constructor(tag) { this.tag = tag; this.kids = []; this.attrs = {}; this.dataset = {}; this.style = {};
                     this.textContent = ""; this.value = ""; this.listeners = {}; this.files = []; }
  setAttribute(k, v) { this.attrs[k] = v; if (k.startsWith("data-")) this.dataset[k.slice(5).replace(/-(.)/g, (_, c) => c.toUpperCase())] = v; }
  append(...kids) { for (const k of kids) this.kids.push(typeof k === "string" ? {text: k} : k); }
  addEventListener(name, fn) { this.listeners[name] = fn; }
  all() { return this.kids.flatMap(k => k instanceof El ? [k, ...k.all()] : []); }
  querySelectorAll(sel) {
    if (sel === "details[data-search]") return this.all().filter(e => e.tag === "details" && e.attrs["data-search"] !== undefined);
    if (sel === "input[data-in]") return this.all().filter(e => e.tag === "input" && e.attrs["data-in"] !== undefined);
    if (sel === "input") return this.all().filter(e => e.tag === "input");
    const kind = sel.match(/^\[data-kind=(\w+)\]( input)?$/);
    if (kind) {
      const box = this.all().find(e => e.attrs["data-kind"] === kind[1]);
      return box ? (kind[2] ? box.all().filter(e => e.tag === "input") : [box]) : [];
    }
    throw new Error("selector not in the stand-in: " + sel);
  }
  querySelector(sel) { return this.querySelectorAll(sel)[0] || null; }
}
const ids = {key: new El("input"), filter: new El("input"), ops: new El("main"), title: new El("h1")};
globalThis.document = {createElement: tag => new El(tag), getElementById: id => ids[id]};
globalThis.sessionStorage = {getItem: () => null, setItem: () => {}};
globalThis.location = {protocol: "http:", host: "127.0.0.1:8080", pathname: process.env.EXPLORER_PATH};
globalThis.performance = {now: () => 0};
const SPEC = JSON.parse((await import("node:fs")).readFileSync(process.env.EXPLORER_SPEC_FILE, "utf8"));
const sent = [];
globalThis.fetch = async (url, init = {}) => {
  if (url === process.env.EXPLORER_SPEC_URL) return {json: async () => SPEC};
  sent.push({url, method: init.method, headers: init.headers, body: init.body});
  return {status: 201, statusText: "Created", headers: [["content-type", "application/json"]],
          text: async () => '{"session_id": "s1"}'};
};
globalThis.__report = async () => {
  await new Promise(r => setTimeout(r, 10));
  const details = ids.ops.querySelectorAll("details[data-search]");
  const create = details.find(d => d.attrs["data-search"].startsWith("post /v1/sessions "));
  const form = create.all().find(e => e.tag === "form");
  ids.key.value = "fgk_test";
  form.onsubmit({preventDefault() {}});
  await new Promise(r => setTimeout(r, 10));
  const shown = create.all().filter(e => e.tag === "pre")[0].textContent;
  console.log(JSON.stringify({operations: details.map(d => d.attrs["data-search"].split(" ").slice(0, 2).join(" ")),
                              title: ids.title.textContent, sent, shown}));
};
"""


@pytest.mark.skipif(NODE is None, reason="node is not installed")
@pytest.mark.parametrize(("page", "prefix"), [("/docs", "/"), ("/flow/docs", "/flow/")])
def test_the_explorer_renders_every_operation_and_sends_a_request(page, prefix, tmp_path):
    doc = plane_document(("hub", "scheduler", "gateway"), "1")
    spec = tmp_path / "openapi.json"  # a file: the description outgrew one environment string (128 KiB)
    spec.write_text(json.dumps(doc))
    script = DOM + _SCRIPT.replace("__SPEC_URL__", json.dumps("/openapi.json")) + "\nawait __report();\n"
    result = subprocess.run([NODE, "--input-type=module", "-e", script], capture_output=True, text=True,
                            timeout=60, env={"EXPLORER_SPEC_FILE": str(spec), "PATH": "/usr/bin:/bin", "EXPLORER_PATH": page,
                                                 "EXPLORER_SPEC_URL": prefix + "openapi.json"})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(report["operations"]) == sorted(f"{m.lower()} {p}" for m, p in operations(doc))
    assert report["title"] == "flowctl control plane 1"
    # The create form was filled from the schema's example and sent with the key typed at the top.
    [request] = report["sent"]
    assert (request["url"], request["method"]) == (prefix + "v1/sessions", "POST")
    assert request["headers"]["Authorization"] == "Bearer fgk_test"
    assert json.loads(request["body"]) == {"tutor_id": 1, "student_id": 1, "kb_id": "test-kb"}
    assert report["shown"].startswith("201 Created") and '"session_id": "s1"' in report["shown"]
