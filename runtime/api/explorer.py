"""The interactive API explorer served at /docs: one self-contained page, no CDN, works offline.

It reads the OpenAPI document, lists every operation by tag, and for each one offers a
form (path, query and header parameters, a JSON body prefilled from the schema, or files
for uploads) that sends the request from the browser and shows the status, headers and
body; WebSocket routes get a small console. The bearer key typed at the top is kept in
the tab's sessionStorage only. All text from the document is inserted as text, never HTML.
"""

from __future__ import annotations

import html
import json

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:72em;padding:1em;color:#222}
header{display:flex;flex-wrap:wrap;gap:1em;align-items:center;border-bottom:1px solid #ccc;padding-bottom:.5em}
input,textarea,select,button{font:inherit}textarea{width:100%;font-family:monospace;min-height:6em}
details{border:1px solid #ddd;border-radius:4px;margin:.3em 0}summary{cursor:pointer;padding:.4em}
.m{display:inline-block;min-width:4.5em;font-weight:bold;font-family:monospace}
.get{color:#0a6}.post{color:#06c}.put{color:#a60}.patch{color:#a0a}.delete{color:#c00}
.body{padding:.5em 1em;border-top:1px solid #eee}.desc{white-space:pre-wrap;color:#444}
pre{background:#f6f6f6;padding:.5em;overflow:auto;max-height:30em}label{display:block;margin:.2em 0}
label span{display:inline-block;min-width:12em;font-family:monospace}h2{margin-top:1.2em}
"""

_SCRIPT = r"""
// Relative to this page, so a plane behind a proxy under a path prefix (/flow/docs) works too.
const BASE = location.pathname.replace(/docs\/?$/, "");
const SPEC_URL = BASE + __SPEC_URL__.replace(/^\//, "");
const $ = (tag, props = {}, ...kids) => {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) { if (k === "text") el.textContent = v; else el.setAttribute(k, v); }
  for (const kid of kids) el.append(kid);
  return el;
};
let spec = null;
const keyInput = document.getElementById("key");
keyInput.value = sessionStorage.getItem("flowctl-key") || "";
keyInput.addEventListener("input", () => sessionStorage.setItem("flowctl-key", keyInput.value));

function resolve(schema) {
  let seen = 0;
  while (schema && schema.$ref && seen++ < 20) schema = spec.components.schemas[schema.$ref.split("/").pop()];
  if (schema && schema.allOf) {
    const props = {};
    for (const part of schema.allOf) Object.assign(props, (resolve(part) || {}).properties || {});
    return {type: "object", properties: props};
  }
  return schema || {};
}
function sample(schema, depth = 0) {
  schema = resolve(schema);
  if (schema.example !== undefined) return schema.example;
  if (depth > 4) return null;
  if (schema.enum) return schema.enum.find(v => v !== null && v !== "") ?? schema.enum[0];
  switch (schema.type) {
    case "object": {
      const out = {};
      const required = schema.required || Object.keys(schema.properties || {});
      for (const name of required) if ((schema.properties || {})[name]) out[name] = sample(schema.properties[name], depth + 1);
      return out;
    }
    case "array": return [];
    case "integer": case "number": return schema.minimum ?? 1;
    case "boolean": return false;
    default: return "";
  }
}
function paramInputs(op, item) {
  const params = [...(item.parameters || []), ...(op.parameters || [])];
  return params.map(p => {
    const input = $("input", {"data-in": p.in, "data-name": p.name, placeholder: (p.schema || {}).pattern || ""});
    const label = $("label", {}, $("span", {text: `${p.name} (${p.in})${p.required ? " *" : ""}`}), input);
    if (p.description) label.append($("small", {text: " " + p.description}));
    return label;
  });
}
function bodyInput(op) {
  const content = (op.requestBody || {}).content || {};
  if (content["application/json"]) {
    const area = $("textarea", {"data-kind": "json"});
    area.value = JSON.stringify(sample(content["application/json"].schema), null, 2);
    return area;
  }
  if (content["multipart/form-data"]) {
    const schema = resolve(content["multipart/form-data"].schema);
    const box = $("div", {"data-kind": "multipart"});
    for (const [name, prop] of Object.entries(schema.properties || {})) {
      const binary = resolve(prop).format === "binary";
      box.append($("label", {}, $("span", {text: name}), $("input", {type: binary ? "file" : "text", "data-field": name})));
    }
    return box;
  }
  const type = Object.keys(content)[0];
  return type ? $("div", {"data-kind": "file", "data-type": type}, $("label", {},
    $("span", {text: `body (${type})`}), $("input", {type: "file"}))) : null;
}
async function send(method, path, form, out) {
  let url = BASE + path.replace(/^\//, "");
  const query = new URLSearchParams();
  const headers = {};
  for (const input of form.querySelectorAll("input[data-in]")) {
    const value = input.value;
    if (!value) continue;
    const where = input.dataset.in, name = input.dataset.name;
    if (where === "path") url = url.replace(`{${name}}`, encodeURIComponent(value));
    else if (where === "query") query.append(name, value);
    else if (where === "header") headers[name] = value;
  }
  if (keyInput.value && !headers.Authorization) headers.Authorization = "Bearer " + keyInput.value;
  if ([...query].length) url += "?" + query;
  let body;
  const json = form.querySelector("[data-kind=json]");
  const multipart = form.querySelector("[data-kind=multipart]");
  const file = form.querySelector("[data-kind=file] input");
  if (json) { body = json.value; headers["Content-Type"] = "application/json"; }
  else if (multipart) {
    body = new FormData();
    for (const input of multipart.querySelectorAll("input")) {
      if (input.type === "file") { if (input.files[0]) body.append(input.dataset.field, input.files[0]); }
      else if (input.value) body.append(input.dataset.field, input.value);
    }
  } else if (file && file.files[0]) {
    body = file.files[0];
    headers["Content-Type"] = form.querySelector("[data-kind=file]").dataset.type;
  }
  out.textContent = `${method} ${url} ...`;
  try {
    const started = performance.now();
    const response = await fetch(url, {method, headers, body});
    const text = await response.text();
    let shown = text;
    try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON: as it came */ }
    const lines = [...response.headers].map(([k, v]) => `${k}: ${v}`).join("\n");
    out.textContent = `${response.status} ${response.statusText} (${Math.round(performance.now() - started)} ms)\n${lines}\n\n${shown}`;
  } catch (error) {
    out.textContent = `request failed: ${error}`;
  }
}
function socketConsole(path, form) {
  const log = $("pre", {text: "not connected"});
  const message = $("textarea", {});
  message.value = JSON.stringify({type: "text", content: "hello"});
  let ws = null;
  const connect = $("button", {type: "button", text: "Connect"});
  const sendButton = $("button", {type: "button", text: "Send message"});
  connect.onclick = () => {
    let url = BASE + path.replace(/^\//, "");
    const query = new URLSearchParams();
    for (const input of form.querySelectorAll("input[data-in]")) {
      if (input.dataset.in === "path") url = url.replace(`{${input.dataset.name}}`, encodeURIComponent(input.value));
      else if (input.dataset.in === "query" && input.value) query.append(input.dataset.name, input.value);
    }
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    if (ws) ws.close();
    ws = new WebSocket(scheme + location.host + url + ([...query].length ? "?" + query : ""));
    log.textContent = "connecting...";
    ws.onopen = () => { log.textContent += "\nopen"; };
    ws.onmessage = event => { log.textContent += "\n< " + event.data; };
    ws.onclose = event => { log.textContent += `\nclosed ${event.code} ${event.reason}`; };
  };
  sendButton.onclick = () => { if (ws) { ws.send(message.value); log.textContent += "\n> " + message.value; } };
  return $("div", {}, connect, " ", message, sendButton, log);
}
function operationView(path, item, method, op) {
  const details = $("details", {"data-search": `${method} ${path} ${op.summary || ""}`.toLowerCase()});
  const title = $("summary", {}, $("span", {class: "m " + method, text: method.toUpperCase()}), $("code", {text: path}),
                  " " + (op.summary || ""));
  if (op.security) title.append($("small", {text: "  [" + op.security.map(s => Object.keys(s)[0]).join(" or ") + "]"}));
  const form = $("form", {});
  const out = $("pre", {text: ""});
  const isSocket = (op.responses || {})["101"] !== undefined;
  form.append(...paramInputs(op, item));
  const bodyField = bodyInput(op);
  if (bodyField) form.append(bodyField);
  if (isSocket) {
    form.append(socketConsole(path, form));
    form.onsubmit = event => event.preventDefault();
  }
  else {
    const button = $("button", {type: "submit", text: "Send " + method.toUpperCase()});
    form.append(button);
    form.onsubmit = event => { event.preventDefault(); send(method.toUpperCase(), path, form, out); };
  }
  const responses = Object.entries(op.responses || {}).map(([code, r]) => `${code}: ${r.description || ""}`).join("\n");
  details.append(title, $("div", {class: "body"}, $("p", {class: "desc", text: op.description || ""}), form, out,
                          $("details", {}, $("summary", {text: "Responses"}), $("pre", {text: responses}))));
  return details;
}
async function main() {
  const root = document.getElementById("ops");
  try {
    spec = await (await fetch(SPEC_URL)).json();
  } catch (error) {
    root.textContent = `cannot load ${SPEC_URL}: ${error}`;
    return;
  }
  document.getElementById("title").textContent = spec.info.title + " " + spec.info.version;
  const groups = new Map((spec.tags || []).map(t => [t.name, {tag: t, ops: []}]));
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(item)) {
      if (!["get", "put", "post", "delete", "patch", "head", "options"].includes(method)) continue;
      const name = (op.tags || ["other"])[0];
      if (!groups.has(name)) groups.set(name, {tag: {name}, ops: []});
      groups.get(name).ops.push(operationView(path, item, method, op));
    }
  }
  for (const {tag, ops} of groups.values()) {
    if (!ops.length) continue;
    root.append($("h2", {text: tag.name}), $("p", {class: "desc", text: tag.description || ""}), ...ops);
  }
  document.getElementById("filter").addEventListener("input", event => {
    const needle = event.target.value.toLowerCase();
    for (const d of root.querySelectorAll("details[data-search]")) d.style.display = d.dataset.search.includes(needle) ? "" : "none";
  });
}
main();
"""


def explorer_html(title: str, spec_url: str) -> str:
    """The explorer page for the document at `spec_url`."""
    script = _SCRIPT.replace("__SPEC_URL__", json.dumps(spec_url).replace("</", "<\\/"))
    name = html.escape(title)
    return (f"<!doctype html><html lang=en><meta charset=utf-8><title>{name}</title>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{_STYLE}</style>"
            f"<header><h1 id=title>{name}</h1><a href='{html.escape(spec_url)}'>OpenAPI JSON</a>"
            "<label>API key / admin key: <input id=key type=password size=40 autocomplete=off></label>"
            "<input id=filter placeholder='filter: method, path, words'></header>"
            "<main id=ops>loading...</main>"
            f"<script>{script}</script></html>")
