"""The hub's OpenAPI description (`/openapi.json`) and a self-contained docs page (`/docs`)."""

from __future__ import annotations

import html
from typing import Any

from quart import Response

from hub_store.ids import DIGEST_PATTERN
from packer.manifest import MODEL_ID_PATTERN, SERVICE_ID_PATTERN
from runtime.api import ERROR_SCHEMA

_SEMVER_OR_LATEST = "SemVer 2.0.0 (e.g. 1.2.3) or `latest` = highest stable, non-yanked version"
_DIGESTS = ("sha256 and size_bytes describe the seed's .zip (/storage/services/{id}/{version}.zip), "
            "what seed 001's clients download and check; bundle_sha256 and bundle_size_bytes describe "
            "the .fbundle. The zip is deterministic and built once per version, so its digest never "
            "changes.")
_RANGE = ("HEAD supported. Range (single, suffix ranges included) -> 206 with Content-Range, "
          "unsatisfiable -> 416. ETag = \"<sha256 hex>\" (strong); If-None-Match -> 304; If-Range. "
          "A hub whose blobs are in an S3-compatible store (--blobs s3://...) answers a GET with 307 to a "
          "presigned URL valid for --blob-url-ttl seconds (Cache-Control: no-store): follow it without "
          "this hub's Authorization header, with the same Range; check the bytes against the digest; "
          "a 403 from the store means the URL expired, ask the hub again. HEAD and 304/412/416 are "
          "answered by the hub itself.")


def _p(name: str, desc: str, pattern: str | None = None, where: str = "path") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    return {"name": name, "in": where, "required": where == "path", "description": desc, "schema": schema}


SID = _p("service_id", "service id", SERVICE_ID_PATTERN)
VER = _p("version", _SEMVER_OR_LATEST)
MID = _p("model_id", "model id", MODEL_ID_PATTERN)


def _op(summary: str, params: list[dict[str, Any]] | None = None, *, desc: str = "",
        responses: dict[str, str] | None = None, auth: bool = False,
        body: str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "parameters": params or [],
                          "responses": {k: _response(k, v) for k, v in
                                        (responses or {"200": "OK", "404": "not found"}).items()}}
    if desc:
        op["description"] = desc
    if auth:
        op["security"] = [{"adminKey": []}]
    if body:
        binary = {"schema": {"type": "string", "format": "binary"}}
        op["requestBody"] = {"required": True, "content": {body: binary, "application/zip": binary}}
    return op


def _response(status: str, description: str) -> dict[str, Any]:
    if int(status) < 400:
        return {"description": description}
    return {"description": description, "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/Error"}}}}


def spec() -> dict[str, Any]:
    """The OpenAPI 3.1 document."""
    dl = {"200": "the bytes", "206": "a range",
          "307": "blobs in an S3-compatible store: Location is a presigned GET URL", "304": "not modified",
          "404": "not found", "416": "range not satisfiable",
          "503": "the blob store (S3) cannot be reached or refused the call"}
    paths: dict[str, Any] = {
        "/health": {"get": _op("Liveness", responses={"200": '{"status": "ok"}'})},
        "/api/services": {"get": _op("List services (seed 001 shape): service_id, service_name, "
                                     "service_type, latest_version, versions[]", desc=_DIGESTS)},
        "/api/services/{service_id}": {"get": _op("Service detail with every version", [SID], desc=_DIGESTS)},
        "/api/services/{service_id}/{version}": {
            "get": _op("One version with its files (path, size, mode, sha256)", [SID, VER]),
            "put": _op("Publish a bundle (.fbundle) or a seed service zip as this version",
                       [SID, _p("version", "SemVer"),
                        _p("stable", "true/false; default: true unless a pre-release", where="query"),
                        _p("X-Flowctl-Sha256", "expected sha256 of the body", where="header")],
                       desc="The body (raw, not multipart) is streamed to disk while hashed. A .fbundle's "
                            "manifest, per-file digests and (with trusted keys) signature are verified. "
                            "A zip (service.json + files + checksum.sha256, as seed 001's upload tool "
                            "makes) is checked as a hostile archive (unsafe or duplicate paths, symlinks "
                            "and special files, encryption, overlapping members, sizes and expansion "
                            "ratio, checksum.sha256 lines) and packed into a bundle; the same zip gives "
                            "the same bundle. Immutable: the same bundle -> 200, another -> 409.",
                       responses={"201": "published", "200": "already published with identical bytes",
                                  "400": "bad bundle or zip (one line naming the member and the reason)",
                                  "401": "admin key needed", "409": "conflict",
                                  "413": "too large (the body, or a zip's declared sizes)",
                                  "415": "multipart form data (send the file as the raw body)",
                                  "507": "not enough disk space (checked before the body is read)"},
                       auth=True, body="application/octet-stream")},
        "/api/services/{service_id}/{version}/manifest": {"get": _op(
            "The canonical service.json bytes stored in the bundle", [SID, VER],
            desc="ETag = sha256 of these bytes. Header X-Flowctl-Version: the resolved version.")},
        "/api/services/{service_id}/{version}/signature": {"get": _op(
            "The raw service.json.sig bytes (Ed25519); 404 when unsigned", [SID, VER])},
        "/api/services/{service_id}/{version}/checksum": {"get": _op(
            "Seed checksum body: service_id, version, sha256, size_bytes (of the .zip), url, "
            "bundle_sha256, bundle_size_bytes", [SID, VER], desc=_DIGESTS)},
        "/api/services/{service_id}/{version}/{action}": {"post": _op(
            "Mark a version stable / unstable / yank / unyank",
            [SID, _p("version", "SemVer"), _p("action", "stable|unstable|yank|unyank")], auth=True,
            responses={"200": "the updated version", "401": "admin key needed", "404": "not found"})},
        "/storage/services/{service_id}/{version}.fbundle": {"get": _op(
            "Download the bundle", [SID, VER], desc=_RANGE, responses=dl)},
        "/storage/services/{service_id}/{version}.zip": {"get": _op(
            "Download the seed's .zip form (built once from the bundle, then cached)", [SID, VER],
            desc=_RANGE, responses=dl)},
        "/blobs/sha256:{digest}": {"get": _op(
            "A file by its SHA-256 (what nodes fetch)", [_p("digest", "64 lowercase hex", DIGEST_PATTERN)],
            desc=_RANGE, responses=dl)},
        "/api/models": {"get": _op("List models with the versions providing them")},
        "/api/models/{model_id}": {"get": _op("Model detail with files and URLs", [MID])},
        "/storage/models/{model_id}/{version}/checksum.sha256": {"get": _op(
            "The seed's model checksum: one sha256sum line (`<sha256>  <path>`) per file of the model",
            [MID, _p("version", "model version or latest")],
            desc="Paths are relative to the model, as in /storage/models/{model_id}/{version}/{file_path}, "
                 "so `sha256sum -c` in the download directory checks them. A model file that is itself "
                 "named checksum.sha256 is served instead. ETag = sha256 of the body.",
            responses={"200": "text/plain sha256sum lines", "304": "not modified", "404": "not found"})},
        "/storage/models/{model_id}/{version}/{file_path}": {"get": _op(
            "Download one file of a model (relative to the model's path in its bundle)",
            [MID, _p("version", "model version or latest"), _p("file_path", "relative path")],
            desc=_RANGE, responses=dl)},
        "/api/model-usage/ranking": {"get": _op(
            "Most downloaded models", [_p("limit", "1..1000, default 10", where="query")],
            desc="A manifest, .fbundle or .zip fetch counts one download for each model of that "
                 "version; a model file fetch (from byte 0) counts one for its model.")},
        "/api/admin/gc": {"post": _op("Delete blobs no version refers to",
                                      [_p("dry_run", "true/false", where="query")], auth=True)},
        "/api/admin/fsck": {"post": _op("Hash every blob; report corrupt and missing ones",
                                        [_p("quarantine", "true/false", where="query")], auth=True)},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "flowctl hub", "version": "1",
                 "description": "Bundles, blobs and models. Errors are JSON: {\"detail\": message}, "
                                "as on every admin API of the control plane (docs/api-errors.md)."},
        "paths": paths,
        "components": {"securitySchemes": {"adminKey": {"type": "http", "scheme": "bearer"}},
                       "schemas": {"Error": ERROR_SCHEMA}},
    }


def docs_html(doc: dict[str, Any]) -> str:
    """A plain, self-contained HTML page listing every endpoint (no CDN needed)."""
    rows = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            lock = " (admin key)" if op.get("security") else ""
            rows.append(f"<tr><td><b>{method.upper()}</b></td><td><code>{html.escape(path)}</code></td>"
                        f"<td>{html.escape(op['summary'])}{lock}<br><small>"
                        f"{html.escape(op.get('description', ''))}</small></td></tr>")
    return ("<!doctype html><meta charset=utf-8><title>flowctl hub API</title>"
            "<style>body{font-family:sans-serif;margin:2em}td{padding:4px 8px;vertical-align:top}"
            "tr:nth-child(even){background:#f4f4f4}</style><h1>flowctl hub API</h1>"
            "<p>Machine-readable: <a href=/openapi.json>/openapi.json</a></p><table>"
            + "".join(rows) + "</table>")


def register(app) -> None:
    """Attach /openapi.json and /docs."""
    document = spec()
    page = docs_html(document)

    @app.get("/openapi.json")
    async def openapi_json() -> Response:
        from runtime.api import json_response

        return json_response(document)

    @app.get("/docs")
    async def docs() -> Response:
        return Response(page, content_type="text/html; charset=utf-8")
